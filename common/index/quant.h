/*
 * 8-bit scalar quantization with a per-vector scale.
 *
 * Each vector x of d floats is stored as d unsigned bytes c[i] and a small
 * header: x[i] ~ lo + step * c[i], with lo = min(x) and step = (max(x) -
 * min(x)) / 255. A per-vector range needs no training pass, so points can
 * stream in one at a time (a per-dimension range would need a sample of the
 * data first). The header also keeps the sum of the codes and the squared
 * norm of the decoded vector, which turn one integer dot product of codes
 * into an L2 or inner-product distance:
 *
 *   dot(x, y) = d lo_x lo_y + lo_x step_y S_y + lo_y step_x S_x
 *               + step_x step_y sum(c_x * c_y)
 *   l2(x, y)  = |x|^2 + |y|^2 - 2 dot(x, y)
 *
 * A query is quantized the same way, then shifted to signed bytes (c - 128)
 * so that sum(c_x * c_q) is one pass of the u8 x s8 kernel (AVX-512 VNNI's
 * vpdpbusd) plus 128 * S_x.
 *
 * Memory: d + 16 bytes per vector instead of 4d.
 */
#ifndef SH_QUANT_H
#define SH_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "distance.h"

typedef struct sh_q8_meta {
	float lo;     /* value of code 0 */
	float step;   /* value of one code step; 0 for a constant vector */
	float norm2;  /* squared L2 norm of the decoded vector */
	uint32_t sum; /* sum of the codes */
} sh_q8_meta;

/* Encodes d floats (finite) into d codes and *m. */
void sh_q8_encode(const float *x, size_t d, uint8_t *codes, sh_q8_meta *m);

/* Decodes d codes into floats. */
void sh_q8_decode(const uint8_t *codes, const sh_q8_meta *m, size_t d,
		  float *out);

/* Encodes a query: like sh_q8_encode, then stores c - 128 as signed bytes. */
void sh_q8_encode_query(const float *x, size_t d, int8_t *qcodes,
			sh_q8_meta *m);

/* dot(x, q) of stored x and a query, from raw = dot_u8i8(codes_x, qcodes). */
static inline float sh_q8_dot_query(int32_t raw, const sh_q8_meta *x,
				    const sh_q8_meta *q, size_t d)
{
	double cc = (double)raw + 128.0 * (double)x->sum;
	return (float)((double)d * x->lo * q->lo +
		       (double)x->lo * q->step * q->sum +
		       (double)q->lo * x->step * x->sum +
		       (double)x->step * q->step * cc);
}

/* A query's constants for the search loop's form of the same formula,
 * folded once per query so that each distance is three multiplications:
 *   dot(x, q) = lo_x * c1 + step_x * (S_x * c2 + step_q * raw)
 * with c1 = d lo_q + step_q S_q and c2 = lo_q + 128 step_q. */
typedef struct sh_q8_qconst {
	float c1, c2, step, norm2;
} sh_q8_qconst;

static inline void sh_q8_qconst_init(const sh_q8_meta *q, size_t d,
				     sh_q8_qconst *c)
{
	c->c1 = (float)((double)d * q->lo + (double)q->step * q->sum);
	c->c2 = q->lo + 128.0f * q->step;
	c->step = q->step;
	c->norm2 = q->norm2;
}

/* sh_q8_dot_query in single precision, from the folded constants. */
static inline float sh_q8_dot_fast(int32_t raw, const sh_q8_meta *x,
				   const sh_q8_qconst *c)
{
	return x->lo * c->c1 +
	       x->step * ((float)x->sum * c->c2 + c->step * (float)raw);
}

/* dot(x, y) of two stored vectors, from raw = dot_u8(codes_x, codes_y). */
static inline float sh_q8_dot_pair(uint32_t raw, const sh_q8_meta *x,
				   const sh_q8_meta *y, size_t d)
{
	return (float)((double)d * x->lo * y->lo +
		       (double)x->lo * y->step * y->sum +
		       (double)y->lo * x->step * x->sum +
		       (double)x->step * y->step * (double)raw);
}

#endif
