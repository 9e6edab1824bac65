/* Per-vector 8-bit scalar quantization. See quant.h. */
#include "quant.h"

#include <math.h>

void sh_q8_encode(const float *x, size_t d, uint8_t *codes, sh_q8_meta *m)
{
	float lo = x[0], hi = x[0];
	for (size_t i = 1; i < d; i++) {
		lo = x[i] < lo ? x[i] : lo;
		hi = x[i] > hi ? x[i] : hi;
	}
	float step = (hi - lo) / 255.0f;
	float inv = step > 0 ? 1.0f / step : 0.0f;
	uint32_t sum = 0;
	double norm2 = 0;
	for (size_t i = 0; i < d; i++) {
		float v = (x[i] - lo) * inv + 0.5f;
		int c = (int)v;
		c = c < 0 ? 0 : c > 255 ? 255 : c;
		codes[i] = (uint8_t)c;
		sum += (uint32_t)c;
		double r = (double)lo + (double)step * c;
		norm2 += r * r;
	}
	m->lo = lo;
	m->step = step;
	m->sum = sum;
	m->norm2 = (float)norm2;
}

void sh_q8_decode(const uint8_t *codes, const sh_q8_meta *m, size_t d,
		  float *out)
{
	for (size_t i = 0; i < d; i++)
		out[i] = m->lo + m->step * codes[i];
}

void sh_q8_encode_query(const float *x, size_t d, int8_t *qcodes, sh_q8_meta *m)
{
	/* Encode in place as unsigned, then shift: same bytes, no scratch. */
	uint8_t *u = (uint8_t *)qcodes;
	sh_q8_encode(x, d, u, m);
	for (size_t i = 0; i < d; i++)
		qcodes[i] = (int8_t)((int)u[i] - 128);
}
