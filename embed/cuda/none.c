/*
 * The CUDA backend of a build without CUDA: never available, and a context
 * cannot be created.
 */
#include "bert.h"
#include "error.h"

int sh_bert_cuda_available(void)
{
	return 0;
}

static int none_create(const struct sh_bert_model *m, int max_batch,
		       int max_seq, void **ctx, char *err, size_t errlen)
{
	*ctx = NULL;
	return sh_errf(err, errlen, SH_EUNSUPPORTED,
		       "cuda backend: this build has no CUDA (nvcc was not "
		       "found when it was configured)");
}

static int none_forward(void *ctx, const struct sh_bert_batch *b, float *out,
			char *err, size_t errlen)
{
	return sh_errf(err, errlen, SH_EUNSUPPORTED,
		       "cuda backend: this build has no CUDA");
}

static void none_destroy(void *ctx)
{
}

const struct sh_bert_backend_ops sh_bert_cuda = {
    .name = "cuda",
    .create = none_create,
    .forward = none_forward,
    .destroy = none_destroy,
};
