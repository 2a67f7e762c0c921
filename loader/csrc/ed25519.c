/*
 * Ed25519 verification, from RFC 8032's definitions (section 5.1):
 *
 *   field    p = 2^255 - 19
 *   curve    -x^2 + y^2 = 1 + d x^2 y^2,  d = -121665/121666 (twisted Edwards, a = -1)
 *   base     B = (x, 4/5) with x even
 *   order    L = 2^252 + 27742317777372353535851937790883648493
 *
 * The constants d, sqrt(-1) and B are computed from those definitions on
 * each call rather than written out as limbs: a verification runs once per
 * apply, and a derived constant cannot carry a typo.
 *
 * Layers, bottom up: field elements (five 51-bit limbs), points in extended
 * coordinates, encoding and decoding, scalars mod L (bit by bit), and the
 * verification equation. Everything is variable time: the inputs are public.
 */
#include <string.h>

#include "ed25519.h"
#include "sha512.h"

typedef unsigned __int128 u128;

/* ---- field elements mod p ------------------------------------------------
 * value = v[0] + v[1] 2^51 + v[2] 2^102 + v[3] 2^153 + v[4] 2^204. After
 * every operation each limb is below 2^52 ("loose"): products of two limbs
 * times 19 then fit comfortably in 128 bits. Only fe_tobytes reduces fully. */
typedef struct {
    uint64_t v[5];
} fe;

#define MASK51 ((UINT64_C(1) << 51) - 1)

/* Carries each limb's excess into the next; 2^255 wraps to 19 (2^255 = p +
 * 19). Two rounds leave every limb below 2^51 + 2^5. */
static void fe_carry(fe *h)
{
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 4; i++) {
            h->v[i + 1] += h->v[i] >> 51;
            h->v[i] &= MASK51;
        }
        uint64_t top = h->v[4] >> 51;
        h->v[4] &= MASK51;
        h->v[0] += 19 * top;
    }
}

static void fe_small(fe *h, uint64_t n)
{
    memset(h, 0, sizeof *h);
    h->v[0] = n;
}

static void fe_add(fe *h, const fe *a, const fe *b)
{
    for (int i = 0; i < 5; i++)
        h->v[i] = a->v[i] + b->v[i];
    fe_carry(h);
}

/* a - b, computed as a + 4p - b so no limb goes below zero (b's limbs are
 * loose, below 2^52, and 4p's are at least 2^53 - 76). */
static void fe_sub(fe *h, const fe *a, const fe *b)
{
    static const uint64_t four_p[5] = {(UINT64_C(1) << 53) - 76, (UINT64_C(1) << 53) - 4,
                                       (UINT64_C(1) << 53) - 4, (UINT64_C(1) << 53) - 4,
                                       (UINT64_C(1) << 53) - 4};
    for (int i = 0; i < 5; i++)
        h->v[i] = a->v[i] + four_p[i] - b->v[i];
    fe_carry(h);
}

static void fe_neg(fe *h, const fe *a)
{
    fe zero;
    fe_small(&zero, 0);
    fe_sub(h, &zero, a);
}

/* Schoolbook product. A limb product x_i y_j lands at 2^(51(i+j)); when
 * i + j >= 5 that is 2^255 2^(51(i+j-5)), which is 19 2^(51(i+j-5)) mod p:
 * those terms are folded down with a factor 19. */
static void fe_mul(fe *h, const fe *a, const fe *b)
{
    const uint64_t *x = a->v, *y = b->v;
    uint64_t y19[5];
    u128 t[5];
    for (int i = 0; i < 5; i++)
        y19[i] = 19 * y[i];
    t[0] = (u128)x[0] * y[0] + (u128)x[1] * y19[4] + (u128)x[2] * y19[3] +
           (u128)x[3] * y19[2] + (u128)x[4] * y19[1];
    t[1] = (u128)x[0] * y[1] + (u128)x[1] * y[0] + (u128)x[2] * y19[4] +
           (u128)x[3] * y19[3] + (u128)x[4] * y19[2];
    t[2] = (u128)x[0] * y[2] + (u128)x[1] * y[1] + (u128)x[2] * y[0] +
           (u128)x[3] * y19[4] + (u128)x[4] * y19[3];
    t[3] = (u128)x[0] * y[3] + (u128)x[1] * y[2] + (u128)x[2] * y[1] + (u128)x[3] * y[0] +
           (u128)x[4] * y19[4];
    t[4] = (u128)x[0] * y[4] + (u128)x[1] * y[3] + (u128)x[2] * y[2] + (u128)x[3] * y[1] +
           (u128)x[4] * y[0];
    /* Carry in 128 bits: the carry out of t[4] can exceed 2^60, times 19. */
    u128 carry = 0;
    for (int i = 0; i < 5; i++) {
        t[i] += carry;
        h->v[i] = (uint64_t)t[i] & MASK51;
        carry = t[i] >> 51;
    }
    u128 low = (u128)h->v[0] + carry * 19;
    h->v[0] = (uint64_t)low & MASK51;
    h->v[1] += (uint64_t)(low >> 51);
}

/* a^e, e a 256-bit exponent as four little-endian 64-bit words; plain
 * square-and-multiply from the top bit. */
static void fe_pow(fe *h, const fe *a, const uint64_t e[4])
{
    fe r;
    fe_small(&r, 1);
    for (int bit = 255; bit >= 0; bit--) {
        fe_mul(&r, &r, &r);
        if ((e[bit / 64] >> (bit % 64)) & 1)
            fe_mul(&r, &r, a);
    }
    *h = r;
}

/* 1/a = a^(p-2) (Fermat); 0 maps to 0. */
static void fe_invert(fe *h, const fe *a)
{
    static const uint64_t p_minus_2[4] = {UINT64_C(0xffffffffffffffeb), ~UINT64_C(0),
                                          ~UINT64_C(0), UINT64_C(0x7fffffffffffffff)};
    fe_pow(h, a, p_minus_2);
}

/* The low 255 bits of s, little-endian (the top bit is the caller's). */
static void fe_frombytes(fe *h, const uint8_t s[32])
{
    uint64_t w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = 0;
        for (int k = 7; k >= 0; k--)
            w[i] = w[i] << 8 | s[8 * i + k];
    }
    w[3] &= ~(UINT64_C(1) << 63);
    h->v[0] = w[0] & MASK51;
    h->v[1] = (w[0] >> 51 | w[1] << 13) & MASK51;
    h->v[2] = (w[1] >> 38 | w[2] << 26) & MASK51;
    h->v[3] = (w[2] >> 25 | w[3] << 39) & MASK51;
    h->v[4] = w[3] >> 12;
}

/* The canonical encoding: the value reduced below p, 32 bytes
 * little-endian (top bit 0). */
static void fe_tobytes(uint8_t s[32], const fe *a)
{
    fe t = *a;
    fe_carry(&t); /* now below 2^255 + 2^6 < 2p */
    /* q = 1 exactly when t >= p, i.e. when t + 19 reaches 2^255: the carry
     * out of the top limb when 19 is added. */
    uint64_t q = (t.v[0] + 19) >> 51;
    for (int i = 1; i < 5; i++)
        q = (t.v[i] + q) >> 51;
    /* t - q p = t + 19 q - q 2^255: add, carry, drop bit 255. */
    t.v[0] += 19 * q;
    for (int i = 0; i < 4; i++) {
        t.v[i + 1] += t.v[i] >> 51;
        t.v[i] &= MASK51;
    }
    t.v[4] &= MASK51;
    uint64_t w[4] = {
        t.v[0] | t.v[1] << 51,
        t.v[1] >> 13 | t.v[2] << 38,
        t.v[2] >> 26 | t.v[3] << 25,
        t.v[3] >> 39 | t.v[4] << 12,
    };
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 8; k++)
            s[8 * i + k] = (uint8_t)(w[i] >> (8 * k));
}

static int fe_equal(const fe *a, const fe *b)
{
    uint8_t x[32], y[32];
    fe_tobytes(x, a);
    fe_tobytes(y, b);
    return memcmp(x, y, 32) == 0;
}

/* The "sign" of x in RFC 8032's encoding: its least significant bit. */
static int fe_odd(const fe *a)
{
    uint8_t s[32];
    fe_tobytes(s, a);
    return s[0] & 1;
}

/* ---- the curve ---------------------------------------------------------- */

/* The constants, derived from their definitions. */
struct curve {
    fe d, d2;   /* d = -121665/121666, and 2d */
    fe sqrtm1;  /* a square root of -1: 2^((p-1)/4) */
};

/* A point in extended coordinates: x = X/Z, y = Y/Z, x y = T/Z. */
typedef struct {
    fe X, Y, Z, T;
} ge;

static void curve_init(struct curve *c)
{
    static const uint64_t p_minus_1_over_4[4] = {UINT64_C(0xfffffffffffffffb), ~UINT64_C(0),
                                                 ~UINT64_C(0), UINT64_C(0x1fffffffffffffff)};
    fe num, den, two;
    fe_small(&num, 121665);
    fe_neg(&num, &num);
    fe_small(&den, 121666);
    fe_invert(&den, &den);
    fe_mul(&c->d, &num, &den);
    fe_add(&c->d2, &c->d, &c->d);
    fe_small(&two, 2);
    fe_pow(&c->sqrtm1, &two, p_minus_1_over_4);
}

static void ge_identity(ge *p)
{
    fe_small(&p->X, 0);
    fe_small(&p->Y, 1);
    fe_small(&p->Z, 1);
    fe_small(&p->T, 0);
}

/* P + Q, RFC 8032 section 5.1.4. These formulas are complete for a = -1
 * and a non-square d: they also double a point (P == Q) and handle the
 * identity, so no separate doubling is needed. */
static void ge_add(ge *r, const ge *p, const ge *q, const struct curve *c)
{
    fe a, b, cc, d, e, f, g, h, t;
    fe_sub(&a, &p->Y, &p->X);
    fe_sub(&t, &q->Y, &q->X);
    fe_mul(&a, &a, &t);
    fe_add(&b, &p->Y, &p->X);
    fe_add(&t, &q->Y, &q->X);
    fe_mul(&b, &b, &t);
    fe_mul(&cc, &p->T, &q->T);
    fe_mul(&cc, &cc, &c->d2);
    fe_mul(&d, &p->Z, &q->Z);
    fe_add(&d, &d, &d);
    fe_sub(&e, &b, &a);
    fe_sub(&f, &d, &cc);
    fe_add(&g, &d, &cc);
    fe_add(&h, &b, &a);
    fe_mul(&r->X, &e, &f);
    fe_mul(&r->Y, &g, &h);
    fe_mul(&r->T, &e, &h);
    fe_mul(&r->Z, &f, &g);
}

static void ge_neg(ge *r, const ge *p)
{
    fe_neg(&r->X, &p->X);
    r->Y = p->Y;
    r->Z = p->Z;
    fe_neg(&r->T, &p->T);
}

/* Decoding, RFC 8032 section 5.1.3: y from the low 255 bits (refused unless
 * below p: one point, one encoding), the sign of x from the top bit, x
 * recovered as a square root of (y^2 - 1) / (d y^2 + 1). 0 or -1. */
static int ge_decode(ge *p, const uint8_t s[32], const struct curve *c)
{
    static const uint64_t p_minus_5_over_8[4] = {UINT64_C(0xfffffffffffffffd), ~UINT64_C(0),
                                                 ~UINT64_C(0), UINT64_C(0x0fffffffffffffff)};
    int sign = s[31] >> 7;
    uint8_t again[32];
    fe y, u, v, v3, x, vx2, one, neg_u;
    fe_frombytes(&y, s);
    fe_tobytes(again, &y);
    again[31] |= (uint8_t)(sign << 7);
    if (memcmp(again, s, 32) != 0)
        return -1; /* y >= p */
    fe_small(&one, 1);
    fe_mul(&u, &y, &y);
    fe_mul(&v, &u, &c->d);
    fe_sub(&u, &u, &one); /* u = y^2 - 1 */
    fe_add(&v, &v, &one); /* v = d y^2 + 1 */
    /* The candidate x = u v^3 (u v^7)^((p-5)/8): one exponentiation gives
     * the square root of u/v, or of -u/v, without inverting v. */
    fe_mul(&v3, &v, &v);
    fe_mul(&v3, &v3, &v);
    fe_mul(&x, &v3, &v3);
    fe_mul(&x, &x, &v);
    fe_mul(&x, &x, &u);
    fe_pow(&x, &x, p_minus_5_over_8);
    fe_mul(&x, &x, &v3);
    fe_mul(&x, &x, &u);
    fe_mul(&vx2, &x, &x);
    fe_mul(&vx2, &vx2, &v);
    fe_neg(&neg_u, &u);
    if (fe_equal(&vx2, &neg_u))
        fe_mul(&x, &x, &c->sqrtm1); /* it was the root of -u/v */
    else if (!fe_equal(&vx2, &u))
        return -1; /* u/v has no square root: not on the curve */
    fe zero;
    fe_small(&zero, 0);
    if (sign && fe_equal(&x, &zero))
        return -1; /* x = 0 has no negative form */
    if (fe_odd(&x) != sign)
        fe_neg(&x, &x);
    p->X = x;
    p->Y = y;
    fe_small(&p->Z, 1);
    fe_mul(&p->T, &x, &y);
    return 0;
}

/* Encoding, RFC 8032 section 5.1.2: y, with x's sign in the top bit. */
static void ge_encode(uint8_t s[32], const ge *p)
{
    fe zinv, x, y;
    fe_invert(&zinv, &p->Z);
    fe_mul(&x, &p->X, &zinv);
    fe_mul(&y, &p->Y, &zinv);
    fe_tobytes(s, &y);
    s[31] |= (uint8_t)(fe_odd(&x) << 7);
}

/* The base point: y = 4/5, x even (RFC 8032 section 5.1). */
static void ge_base(ge *b, const struct curve *c)
{
    fe four, five;
    uint8_t s[32];
    fe_small(&four, 4);
    fe_small(&five, 5);
    fe_invert(&five, &five);
    fe_mul(&four, &four, &five);
    fe_tobytes(s, &four); /* top bit 0: x even */
    ge_decode(b, s, c);
}

/* ---- scalars mod L ------------------------------------------------------ */

/* L, little-endian 64-bit words. */
static const uint64_t L[4] = {UINT64_C(0x5812631a5cf5d3ed), UINT64_C(0x14def9dea2f79cd6), 0,
                              UINT64_C(0x1000000000000000)};

/* a >= L for a 256-bit a. */
static int at_least_l(const uint64_t a[4])
{
    for (int i = 3; i >= 0; i--)
        if (a[i] != L[i])
            return a[i] > L[i];
    return 1;
}

static void load_words(uint64_t *w, const uint8_t *s, int nwords)
{
    for (int i = 0; i < nwords; i++) {
        w[i] = 0;
        for (int k = 7; k >= 0; k--)
            w[i] = w[i] << 8 | s[8 * i + k];
    }
}

/* A 512-bit little-endian number mod L, by long division one bit at a
 * time: r = 2r + bit, minus L when it reaches L. r stays below L < 2^253,
 * so 2r + 1 fits in 256 bits. */
static void reduce_512(uint64_t r[4], const uint8_t s[64])
{
    uint64_t n[8];
    load_words(n, s, 8);
    memset(r, 0, 4 * sizeof *r);
    for (int bit = 511; bit >= 0; bit--) {
        for (int i = 3; i > 0; i--)
            r[i] = r[i] << 1 | r[i - 1] >> 63;
        r[0] = r[0] << 1 | ((n[bit / 64] >> (bit % 64)) & 1);
        if (at_least_l(r)) {
            uint64_t borrow = 0;
            for (int i = 0; i < 4; i++) {
                u128 d = (u128)r[i] - L[i] - borrow;
                r[i] = (uint64_t)d;
                borrow = (uint64_t)(d >> 64) & 1;
            }
        }
    }
}

/* ---- verification ------------------------------------------------------- */

/* [s]B + [k]P, both scalars below 2^253: one shared run of doublings from
 * the top bit (Straus/Shamir), adding B and P where their bits are set. */
static void double_scalar_mul(ge *r, const uint64_t s[4], const ge *b, const uint64_t k[4],
                              const ge *p, const struct curve *c)
{
    ge_identity(r);
    for (int bit = 252; bit >= 0; bit--) {
        ge_add(r, r, r, c);
        if ((s[bit / 64] >> (bit % 64)) & 1)
            ge_add(r, r, b, c);
        if ((k[bit / 64] >> (bit % 64)) & 1)
            ge_add(r, r, p, c);
    }
}

int hp_ed25519_key_ok(const uint8_t pub[32])
{
    struct curve c;
    ge a;
    curve_init(&c);
    return ge_decode(&a, pub, &c) == 0;
}

int hp_ed25519_verify(const uint8_t sig[64], const uint8_t *msg, size_t len,
                      const uint8_t pub[32])
{
    struct curve c;
    ge a, neg_a, b, check;
    uint64_t s[4], k[4];
    uint8_t h[64], r_again[32];
    struct hp_sha512 sha;

    curve_init(&c);
    if (ge_decode(&a, pub, &c))
        return HP_ED25519_BAD_KEY;
    /* S must be reduced: otherwise S + L would verify too (malleability). */
    load_words(s, sig + 32, 4);
    if (at_least_l(s))
        return HP_ED25519_BAD_S;
    /* k = SHA-512(R || A || M) mod L */
    hp_sha512_init(&sha);
    hp_sha512_update(&sha, sig, 32);
    hp_sha512_update(&sha, pub, 32);
    hp_sha512_update(&sha, msg, len);
    hp_sha512_final(&sha, h);
    reduce_512(k, h);
    /* [S]B = R + [k]A  <=>  [S]B - [k]A = R, compared as encodings (so a
     * non-canonical R never matches). */
    ge_base(&b, &c);
    ge_neg(&neg_a, &a);
    double_scalar_mul(&check, s, &b, k, &neg_a, &c);
    ge_encode(r_again, &check);
    return memcmp(r_again, sig, 32) == 0 ? HP_ED25519_OK : HP_ED25519_MISMATCH;
}
