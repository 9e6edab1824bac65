#!/usr/bin/env bash
# Cross-checks the tokenizer and the CPU backend against the engine that made
# shared/data/minilm/golden.jsonl (npm @lat.md/embed@0.2.0: Hugging Face's
# tokenizer and candle, in WebAssembly) on a few hundred generated texts far
# stranger than golden.jsonl's: every script, fullwidth forms, ligatures,
# emoji sequences, zero-width and control characters, literal special tokens,
# long words. Needs node and npm (the npm registry) and the installed model;
# not part of `meson test` (it downloads the engine).
#
#   embed/crosscheck.sh [BUILD_DIR]        # default: build
#
# Runs test_embed_golden on the generated reference: every text one at a
# time and all as one padded batch, cosine >= 0.9999 each.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$root/build}
model=$root/models/all-MiniLM-L6-v2
test_bin=$build/embed/test_embed_golden
[[ -f $model/config.json ]] || { echo "crosscheck: no model (deploy/fetch-model.sh)" >&2; exit 1; }
[[ -x $test_bin ]] || { echo "crosscheck: no $test_bin (ninja -C $build embed/test_embed_golden)" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/shoal-crosscheck.XXXXXX")
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent @lat.md/embed@0.2.0 >/dev/null && tar xzf lat.md-embed-0.2.0.tgz)

python3 - "$work/texts.jsonl" <<'PY'
import json, random, sys
random.seed(1234)
words = ("red cotton kurti women men shoes leather bag wireless headphones "
         "stainless steel bottle organic tea vintage lamp waterproof jacket "
         "running sneakers smartwatch backpack laptop sleeve kids toy").split()
odd = ["café", "naïve", "Ñandú", "Zürich", "Øresund", "Ålesund", "garçon",
       "Straße", "ẞ", "œuvre", "Æsir", "İstanbul", "ırmak", "ΣΟΦΙΑ", "σοφία",
       "Москва", "ёлка", "القاهرة", "שלום", "हिन्दी", "क़िला", "ภาษาไทย",
       "한국어", "カタカナ", "ひらがな", "中文字符", "漢字", "𠀀𠀁", "ｈｅｌｌｏ",
       "ﬁne", "Ⅻ", "x²", "①②", "∑≥≠", "€5", "¥100", "₹499", "—", "–",
       "“quoted”", "‘single’", "«guillemets»", "„low“", "…", "•", "©®™",
       "℃", "ℓ", "Å", "K", "Ǆemal", "Ⓐ", "ǅ", "ﬀ", "Ꭰ", "ꭰ", "Ⴀ", "ⴀ",
       "Ա", "ա", "🙂", "👍🏽", "👩‍💻", "🇮🇳", "❤️", "ŉ", "ǰ", "ΐ", "ﻼ",
       "ﷺ", "㎏", "㍻", "ﾊﾝｶｸ", "n\u0303", "e\u0301\u0301", "\u0301alone",
       "a\u200db", "soft\u00adhyphen", "zero\u200bwidth", "bom\ufeffhere",
       "nb\u00a0sp", "ideo\u3000space", "tab\there", "line\nbreak",
       "cr\rlf", "ctl\x07bell", "del\x7fx", "c1\x85nel", "repl\ufffdx",
       "priv\ue000x", "vs\ufe0fx", "\u0378", "\uf96d", "x\U0002b86c",
       "[CLS]", "[SEP]", "[MASK]", "[sep]", "##ing", "a##b",
       "http://example.com/a?b=c&d=e", "user@mail.com", "$19.99", "50%",
       "3.5mm", "4K-UHD", "C++", "#hashtag", "x^2", "a_b", "`tick`",
       "~tilde", "|pipe|", "{brace}", "<tag>", "back\\slash", "'apos'",
       "\"dq\"", "semi;colon", "½", "⁹", "₂", "µ", "Ω", "ゔ", "か\u3099",
       "ǘ", "ố", "ự", "ａｂｃ１２３", "supercalifragilisticexpialidocious"]
texts = []
for _ in range(500):
    parts = []
    for _ in range(random.randint(1, 14)):
        r = random.random()
        if r < 0.45:
            w = random.choice(words)
            parts.append(w.upper() if random.random() < 0.3 else w)
        elif r < 0.9:
            parts.append(random.choice(odd))
        else:
            parts.append("".join(chr(random.randint(0x21, 0x7e))
                                 for _ in range(random.randint(1, 6))))
    texts.append(random.choice([" ", " ", "", "  ", "\t", " - ", ", "]).join(parts))
texts += odd + ["".join(random.choice(words + odd) + " " for _ in range(400)),
                "a" * 99 + " " + "b" * 100 + " " + "c" * 101 + " " + "é" * 101]
with open(sys.argv[1], "w") as f:
    for t in texts:
        f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
PY

cat >"$work/ref.mjs" <<'JS'
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
const [, , dir, model] = process.argv;
const { Embedder } = createRequire(import.meta.url)(dir + '/package/dist/engine.cjs');
const rd = (f) => new Uint8Array(readFileSync(model + '/' + f));
const e = new Embedder(rd('model.fp16.safetensors'), rd('tokenizer.json'), rd('config.json'), 256);
const out = readFileSync(dir + '/texts.jsonl', 'utf8').trim().split('\n').map((l) => {
  const text = JSON.parse(l).text;
  return JSON.stringify({ text, vector: Array.from(e.embed([text])[0]) });
});
writeFileSync(dir + '/ref.jsonl', out.join('\n') + '\n');
JS
node "$work/ref.mjs" "$work" "$model"
echo "crosscheck: $(wc -l <"$work/ref.jsonl") texts embedded by the reference engine" >&2
SHOAL_MODEL_DIR=$model SHOAL_GOLDEN=$work/ref.jsonl "$test_bin"
