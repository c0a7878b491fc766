/* tlsload: full-TLS-handshake load for the bench `tls` suite. Compiled at run time with
 * `cc -O2 tlsload.c -lssl -lcrypto`.
 *
 *   tlsload [-o | -r] HOST PORT PATH CONNS SECONDS [WARMUP_S]
 *
 * Closed loop over CONNS slots. Each slot repeats: TCP connect, a full TLS 1.3 handshake
 * (X25519, SNI "backend.test"), one `GET PATH` with `Connection: close`, read the whole
 * response, send close_notify, close. No session is ever offered, so no handshake resumes
 * (wrk keeps the session of the previous connection across reconnects and resumes).
 *
 * The point is to measure the server, so the client must be much cheaper per handshake than
 * the server. With OpenSSL 3.0 as the client it is not: decoding the server's certificate
 * (the public key goes through OSSL_DECODER) plus the ECDSA verification cost the client ~1.5x
 * what the server spends. So by default this is its own minimal TLS 1.3 client (RFC 8446),
 * built on libcrypto primitives only:
 *   - it offers TLS_AES_256_GCM_SHA384 and TLS_AES_128_GCM_SHA256, group x25519, signature
 *     schemes ecdsa_secp256r1_sha256 / rsa_pss_rsae_sha256 / rsa_pkcs1_sha256,
 *     psk_key_exchange_modes psk_dhe_ke (so servers send session tickets, as to any client),
 *     a 32-byte legacy session id (middlebox compatibility mode, as OpenSSL clients do);
 *   - it uses ONE X25519 key share for all connections (the server cannot tell; its own work,
 *     a fresh key pair, the shared secret, the CertificateVerify signature, is unchanged);
 *   - it does not parse the server's certificate and does not check the CertificateVerify
 *     signature; it does check the server's Finished MAC (which proves the key schedule).
 * With -o the client is OpenSSL (libssl, a fresh SSL per connection, no verification): the
 * reference implementation, to cross-check that both clients give the server the same work.
 * With -r (libssl too) every slot offers the newest ticket the server gave it on its previous
 * connection, and uses each ticket once, as RFC 8446 (appendix C.4) asks of TLS 1.3 clients
 * and as wrk's reconnects do: it measures resumed handshakes, and how many reconnects the
 * server lets resume ("resumed" against "completed_total").
 *
 * The first WARMUP_S seconds (default 1) are not counted in the rate or the percentiles;
 * "completed_total" counts every successful request from the start (for CPU per handshake).
 * Prints one JSON object: rate, latency (connect to last response byte) and handshake time
 * (connect to the server's Finished) percentiles, errors, the client's own CPU time in the
 * measured window, session tickets received, and the negotiated protocol/cipher/group.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RBUF  (5 + 16384 + 256) /* one full TLS record */
#define HBUF  16384             /* plaintext handshake messages / HTTP head */
#define TRBUF 16384             /* handshake transcript */
#define SNI   "backend.test"

enum { S_FREE, S_CONNECTING, S_HANDSHAKE, S_WRITE, S_READ };

/* A TLS 1.3 cipher suite: its hash and AEAD. */
typedef struct {
    uint16_t id;
    const char *name;
    const EVP_MD *md;
    const EVP_CIPHER *aead;
    size_t hlen, klen;
} suite_t;

typedef struct { /* one direction's traffic protection */
    EVP_CIPHER_CTX *ctx;
    uint8_t iv[12];
    uint64_t seq;
} dir_t;

typedef struct {
    int fd;
    int state;
    SSL *ssl;        /* -o mode */
    SSL_SESSION *ticket; /* -r mode: the newest ticket not offered yet, or NULL */
    int64_t t_start; /* connect() */
    int64_t t_hs;    /* handshake done */
    /* HTTP response */
    size_t hlen;    /* bytes in hbuf (head not complete yet) */
    long body_left; /* -1 until the head is parsed */
    char hbuf[HBUF];
    /* raw TLS 1.3 */
    const suite_t *suite;
    int app; /* application keys in use */
    dir_t rd, wr;
    uint8_t hs_secret[48], c_hs[48], s_hs[48];
    size_t rlen, mlen, trlen;
    uint8_t rbuf[RBUF];
    uint8_t mbuf[HBUF]; /* handshake message bytes not consumed yet */
    uint8_t tr[TRBUF];  /* transcript: handshake messages so far */
} slot_t;

static struct sockaddr_in g_addr;
static char g_req[512];
static size_t g_req_len;
static int g_ep, g_openssl, g_resume;
static SSL_CTX *g_ctx;
static long g_tickets, g_resumed, g_bad_status, g_errors, g_conn_errors;
static char g_proto[32] = "", g_cipher[64] = "", g_group[32] = "";
static int g_errmsg_shown;
static suite_t g_suites[2];
static EVP_PKEY_CTX *g_derive; /* our one X25519 key, set up for derive */
static uint8_t g_pub[32];
static EVP_MD_CTX *g_mdctx;
static uint8_t g_sid[32];
static uint64_t g_rand = 0x9e3779b97f4a7c15ULL;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void fail(const char *what)
{
    fprintf(stderr, "tlsload: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(2);
}

/* Returns -1 after printing the first few errors (one line each). */
static int err(const char *fmt, const char *arg)
{
    if (g_errmsg_shown++ < 3) {
        fprintf(stderr, "tlsload: ");
        fprintf(stderr, fmt, arg);
        fputc('\n', stderr);
    }
    ERR_clear_error();
    return -1;
}

static void want(slot_t *s, int idx, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)idx};
    if (epoll_ctl(g_ep, EPOLL_CTL_MOD, s->fd, &ev) != 0)
        fail("epoll_ctl");
}

/* ------------------------------------------------------------------------------------------
 * HTTP response
 * ---------------------------------------------------------------------------------------- */

/* Takes n more bytes of the response. 1: complete, 0: need more, -1: error. */
static int http_take(slot_t *s, const uint8_t *p, size_t n)
{
    if (s->body_left >= 0) {
        s->body_left -= (long)n;
        return s->body_left <= 0 ? 1 : 0;
    }
    if (n > HBUF - s->hlen)
        return err("%s", "response head too large");
    memcpy(s->hbuf + s->hlen, p, n);
    s->hlen += n;
    char *end = memmem(s->hbuf, s->hlen, "\r\n\r\n", 4);
    if (!end)
        return 0;
    size_t head = (size_t)(end - s->hbuf) + 4;
    if (s->hlen < 12 || memcmp(s->hbuf, "HTTP/1.", 7) != 0)
        return err("%s", "not an HTTP/1 response");
    if (atoi(s->hbuf + 9) != 200)
        g_bad_status++;
    long cl = -1;
    for (char *q = s->hbuf; q < end;) {
        char *eol = memmem(q, (size_t)(end - q) + 2, "\r\n", 2);
        if (!eol)
            break;
        if ((size_t)(eol - q) > 15 && strncasecmp(q, "content-length:", 15) == 0)
            cl = strtol(q + 15, NULL, 10);
        q = eol + 2;
    }
    if (cl < 0) /* the upstream is nginx serving a static file: always Content-Length */
        return err("%s", "response without Content-Length");
    s->body_left = cl - (long)(s->hlen - head);
    return s->body_left <= 0 ? 1 : 0;
}

/* ------------------------------------------------------------------------------------------
 * Key schedule (RFC 8446 section 7) on a pre-fetched digest
 * ---------------------------------------------------------------------------------------- */

static void digest(const suite_t *su, const uint8_t *p, size_t n, uint8_t *out)
{
    if (!EVP_DigestInit_ex(g_mdctx, su->md, NULL) || !EVP_DigestUpdate(g_mdctx, p, n) ||
        !EVP_DigestFinal_ex(g_mdctx, out, NULL))
        fail("digest");
}

/* HMAC(key, a || b || c) */
static void hmac(const suite_t *su, const uint8_t *key, size_t klen, const uint8_t *a, size_t an,
                 const uint8_t *b, size_t bn, const uint8_t *c, size_t cn, uint8_t *out)
{
    uint8_t k[128] = {0}, pad[128], inner[64];
    size_t bs = (size_t)EVP_MD_get_block_size(su->md);
    memcpy(k, key, klen); /* keys here are at most one hash long, never above the block size */
    for (size_t i = 0; i < bs; i++)
        pad[i] = k[i] ^ 0x36;
    if (!EVP_DigestInit_ex(g_mdctx, su->md, NULL) || !EVP_DigestUpdate(g_mdctx, pad, bs) ||
        !EVP_DigestUpdate(g_mdctx, a, an) || !EVP_DigestUpdate(g_mdctx, b, bn) ||
        !EVP_DigestUpdate(g_mdctx, c, cn) || !EVP_DigestFinal_ex(g_mdctx, inner, NULL))
        fail("hmac");
    for (size_t i = 0; i < bs; i++)
        pad[i] = k[i] ^ 0x5c;
    if (!EVP_DigestInit_ex(g_mdctx, su->md, NULL) || !EVP_DigestUpdate(g_mdctx, pad, bs) ||
        !EVP_DigestUpdate(g_mdctx, inner, su->hlen) || !EVP_DigestFinal_ex(g_mdctx, out, NULL))
        fail("hmac");
}

/* HKDF-Expand-Label(secret, label, context, len) */
static void expand_label(const suite_t *su, const uint8_t *secret, const char *label,
                         const uint8_t *ctx, size_t cn, uint8_t *out, size_t len)
{
    uint8_t info[128], t[64];
    size_t ln = strlen(label), n = 0;
    info[n++] = (uint8_t)(len >> 8);
    info[n++] = (uint8_t)len;
    info[n++] = (uint8_t)(6 + ln);
    memcpy(info + n, "tls13 ", 6);
    n += 6;
    memcpy(info + n, label, ln);
    n += ln;
    info[n++] = (uint8_t)cn;
    memcpy(info + n, ctx, cn);
    n += cn;
    size_t done = 0, tn = 0;
    for (uint8_t i = 1; done < len; i++) {
        hmac(su, secret, su->hlen, t, tn, info, n, &i, 1, t);
        tn = su->hlen;
        size_t k = len - done < tn ? len - done : tn;
        memcpy(out + done, t, k);
        done += k;
    }
}

static void set_keys(const suite_t *su, dir_t *d, const uint8_t *secret, int enc)
{
    uint8_t key[32];
    expand_label(su, secret, "key", NULL, 0, key, su->klen);
    expand_label(su, secret, "iv", NULL, 0, d->iv, 12);
    if (!EVP_CipherInit_ex(d->ctx, su->aead, NULL, key, NULL, enc))
        fail("cipher init");
    d->seq = 0;
}

static void nonce(dir_t *d, uint8_t *n)
{
    memcpy(n, d->iv, 12);
    for (int i = 0; i < 8; i++)
        n[11 - i] ^= (uint8_t)(d->seq >> (8 * i));
    d->seq++;
}

/* Appends one protected record (inner type `type`) to out; returns its length. */
static size_t seal(dir_t *d, uint8_t type, const uint8_t *p, size_t n, uint8_t *out)
{
    uint8_t nc[12];
    int l;
    size_t ct = n + 1 + 16;
    out[0] = 23;
    out[1] = 3;
    out[2] = 3;
    out[3] = (uint8_t)(ct >> 8);
    out[4] = (uint8_t)ct;
    uint8_t inner[512];
    memcpy(inner, p, n);
    inner[n] = type;
    nonce(d, nc);
    if (!EVP_CipherInit_ex(d->ctx, NULL, NULL, NULL, nc, 1) ||
        !EVP_CipherUpdate(d->ctx, NULL, &l, out, 5) ||
        !EVP_CipherUpdate(d->ctx, out + 5, &l, inner, (int)n + 1) ||
        !EVP_CipherFinal_ex(d->ctx, out + 5 + l, &l) ||
        !EVP_CIPHER_CTX_ctrl(d->ctx, EVP_CTRL_AEAD_GET_TAG, 16, out + 5 + n + 1))
        fail("seal");
    return 5 + ct;
}

/* Decrypts record rec (header included) in place; returns the inner content type and sets
 * *pt / *n to the plaintext, or -1 when it does not authenticate. */
static int open_rec(dir_t *d, uint8_t *rec, size_t reclen, uint8_t **pt, size_t *n)
{
    uint8_t nc[12];
    int l, l2;
    if (reclen < 5 + 17)
        return -1;
    size_t ct = reclen - 5 - 16;
    nonce(d, nc);
    if (!EVP_CipherInit_ex(d->ctx, NULL, NULL, NULL, nc, 0) ||
        !EVP_CipherUpdate(d->ctx, NULL, &l, rec, 5) ||
        !EVP_CipherUpdate(d->ctx, rec + 5, &l, rec + 5, (int)ct) ||
        !EVP_CIPHER_CTX_ctrl(d->ctx, EVP_CTRL_AEAD_SET_TAG, 16, rec + 5 + ct) ||
        EVP_CipherFinal_ex(d->ctx, rec + 5 + l, &l2) <= 0)
        return -1;
    size_t m = ct;
    while (m > 0 && rec[5 + m - 1] == 0) /* padding */
        m--;
    if (m == 0)
        return -1;
    *pt = rec + 5;
    *n = m - 1;
    return rec[5 + m - 1];
}

/* ------------------------------------------------------------------------------------------
 * Raw TLS 1.3 client
 * ---------------------------------------------------------------------------------------- */

static void tr_add(slot_t *s, const uint8_t *p, size_t n)
{
    if (n > TRBUF - s->trlen)
        fail("transcript overflow");
    memcpy(s->tr + s->trlen, p, n);
    s->trlen += n;
}

static void put16(uint8_t *p, size_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* Writes the ClientHello record into out; returns its length. Adds it to the transcript. */
static size_t client_hello(slot_t *s, uint8_t *out)
{
    uint8_t *p = out + 5 + 4;
    *p++ = 3;
    *p++ = 3;
    for (int i = 0; i < 4; i++) { /* random: not security-relevant for a load generator */
        g_rand ^= g_rand << 13;
        g_rand ^= g_rand >> 7;
        g_rand ^= g_rand << 17;
        memcpy(p + 8 * i, &g_rand, 8);
    }
    p += 32;
    *p++ = 32;
    memcpy(p, g_sid, 32);
    p += 32;
    static const uint8_t suites[] = {0, 4, 0x13, 0x02, 0x13, 0x01};
    memcpy(p, suites, sizeof suites);
    p += sizeof suites;
    *p++ = 1; /* compression methods: null */
    *p++ = 0;
    uint8_t *ext = p;
    p += 2;
    size_t sl = strlen(SNI);
    put16(p, 0); /* server_name */
    put16(p + 2, sl + 5);
    put16(p + 4, sl + 3);
    p[6] = 0;
    put16(p + 7, sl);
    memcpy(p + 9, SNI, sl);
    p += 9 + sl;
    static const uint8_t fixed[] = {
        0, 10, 0, 4,  0, 2,  0, 0x1d,              /* supported_groups: x25519 */
        0, 13, 0, 8,  0, 6,  4, 3,    8, 4,  4, 1, /* signature_algorithms */
        0, 43, 0, 3,  2, 3,  4,                    /* supported_versions: TLS 1.3 */
        0, 45, 0, 2,  1, 1,                        /* psk_key_exchange_modes: psk_dhe_ke */
        0, 51, 0, 38, 0, 36, 0, 0x1d, 0, 32,       /* key_share: x25519, then the key */
    };
    memcpy(p, fixed, sizeof fixed);
    p += sizeof fixed;
    memcpy(p, g_pub, 32);
    p += 32;
    put16(ext, (size_t)(p - ext - 2));
    size_t body = (size_t)(p - (out + 9));
    out[5] = 1;
    out[6] = 0;
    put16(out + 7, body);
    out[0] = 22;
    out[1] = 3;
    out[2] = 1;
    put16(out + 3, body + 4);
    tr_add(s, out + 5, body + 4);
    return 5 + 4 + body;
}

static const uint8_t HRR_RANDOM[32] = {
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c};

/* ServerHello body m (n bytes): picks the suite, derives the handshake secrets. */
static int server_hello(slot_t *s, const uint8_t *m, size_t n)
{
    if (n < 2 + 32 + 1)
        return err("%s", "short ServerHello");
    if (memcmp(m + 2, HRR_RANDOM, 32) == 0)
        return err("%s", "HelloRetryRequest (the server does not take x25519?)");
    size_t i = 34, sidl = m[34];
    i += 1 + sidl;
    if (i + 5 > n)
        return err("%s", "short ServerHello");
    uint16_t cs = (uint16_t)(m[i] << 8 | m[i + 1]);
    i += 3;
    size_t el = (size_t)(m[i] << 8 | m[i + 1]);
    i += 2;
    if (i + el > n)
        return err("%s", "bad ServerHello extensions");
    s->suite = NULL;
    for (int k = 0; k < 2; k++)
        if (g_suites[k].id == cs)
            s->suite = &g_suites[k];
    if (!s->suite)
        return err("%s", "server chose a suite we did not offer");
    const uint8_t *key = NULL;
    int tls13 = 0;
    for (size_t e = i; e + 4 <= i + el;) {
        uint16_t t = (uint16_t)(m[e] << 8 | m[e + 1]);
        size_t l = (size_t)(m[e + 2] << 8 | m[e + 3]);
        if (e + 4 + l > i + el)
            return err("%s", "bad ServerHello extension");
        if (t == 43 && l == 2 && m[e + 4] == 3 && m[e + 5] == 4)
            tls13 = 1;
        if (t == 51 && l == 36 && m[e + 4] == 0 && m[e + 5] == 0x1d && m[e + 7] == 32)
            key = m + e + 8;
        e += 4 + l;
    }
    if (!tls13 || !key)
        return err("%s", "ServerHello without TLS 1.3 or an x25519 key share");

    const suite_t *su = s->suite;
    uint8_t shared[32], zeros[48] = {0}, early[48], derived[48], h[64];
    size_t sl = sizeof shared;
    EVP_PKEY *peer = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, key, 32);
    if (!peer || EVP_PKEY_derive_set_peer(g_derive, peer) <= 0 ||
        EVP_PKEY_derive(g_derive, shared, &sl) <= 0) {
        EVP_PKEY_free(peer);
        return err("%s", "x25519 derive failed");
    }
    EVP_PKEY_free(peer);
    hmac(su, zeros, su->hlen, zeros, su->hlen, NULL, 0, NULL, 0, early); /* Extract(0, 0) */
    digest(su, NULL, 0, h);
    expand_label(su, early, "derived", h, su->hlen, derived, su->hlen);
    hmac(su, derived, su->hlen, shared, 32, NULL, 0, NULL, 0, s->hs_secret);
    digest(su, s->tr, s->trlen, h); /* ClientHello..ServerHello */
    expand_label(su, s->hs_secret, "c hs traffic", h, su->hlen, s->c_hs, su->hlen);
    expand_label(su, s->hs_secret, "s hs traffic", h, su->hlen, s->s_hs, su->hlen);
    set_keys(su, &s->rd, s->s_hs, 0);
    set_keys(su, &s->wr, s->c_hs, 1);
    return 0;
}

/* The server's Finished (body m, n bytes; the transcript holds everything before it):
 * checks it, switches to application keys and sends our Finished and the request. */
static int server_finished(slot_t *s, int idx, const uint8_t *m, size_t n, const uint8_t *msg,
                           size_t msglen)
{
    const suite_t *su = s->suite;
    uint8_t fk[48], h[64], want_mac[64], zeros[48] = {0}, derived[48], master[48], c_ap[48],
                                         s_ap[48];
    expand_label(su, s->s_hs, "finished", NULL, 0, fk, su->hlen);
    digest(su, s->tr, s->trlen, h);
    hmac(su, fk, su->hlen, h, su->hlen, NULL, 0, NULL, 0, want_mac);
    if (n != su->hlen || memcmp(m, want_mac, n) != 0)
        return err("%s", "server Finished does not verify");
    tr_add(s, msg, msglen);
    digest(su, s->tr, s->trlen, h); /* ClientHello..server Finished */
    uint8_t e[64];
    digest(su, NULL, 0, e);
    expand_label(su, s->hs_secret, "derived", e, su->hlen, derived, su->hlen);
    hmac(su, derived, su->hlen, zeros, su->hlen, NULL, 0, NULL, 0, master);
    expand_label(su, master, "c ap traffic", h, su->hlen, c_ap, su->hlen);
    expand_label(su, master, "s ap traffic", h, su->hlen, s_ap, su->hlen);
    /* Our Finished: HMAC(finished_key(c hs traffic), transcript hash). */
    uint8_t fin[4 + 48];
    expand_label(su, s->c_hs, "finished", NULL, 0, fk, su->hlen);
    fin[0] = 20;
    fin[1] = 0;
    fin[2] = 0;
    fin[3] = (uint8_t)su->hlen;
    hmac(su, fk, su->hlen, h, su->hlen, NULL, 0, NULL, 0, fin + 4);
    uint8_t out[1024];
    static const uint8_t ccs[6] = {20, 3, 3, 0, 1, 1}; /* compatibility mode */
    memcpy(out, ccs, 6);
    size_t o = 6;
    o += seal(&s->wr, 22, fin, 4 + su->hlen, out + o);
    set_keys(su, &s->wr, c_ap, 1);
    set_keys(su, &s->rd, s_ap, 0);
    s->app = 1;
    o += seal(&s->wr, 23, (const uint8_t *)g_req, g_req_len, out + o);
    ssize_t w = send(s->fd, out, o, MSG_NOSIGNAL);
    if (w != (ssize_t)o) /* ~250 bytes into an empty socket buffer */
        return err("send: %s", w < 0 ? strerror(errno) : "short write");
    s->t_hs = now_ns();
    (void)idx;
    return 0;
}

/* Handshake-message bytes (plaintext, ServerHello or decrypted). 0 or -1. */
static int hs_bytes(slot_t *s, int idx, const uint8_t *p, size_t n)
{
    if (n > HBUF - s->mlen)
        return err("%s", "handshake message too large");
    memcpy(s->mbuf + s->mlen, p, n);
    s->mlen += n;
    size_t off = 0;
    while (s->mlen - off >= 4) {
        const uint8_t *m = s->mbuf + off;
        size_t l = (size_t)m[1] << 16 | (size_t)m[2] << 8 | m[3];
        if (s->mlen - off < 4 + l)
            break;
        off += 4 + l;
        if (s->app) {
            if (m[0] == 4) /* NewSessionTicket: counted, not kept */
                g_tickets++;
            continue;
        }
        switch (m[0]) {
        case 2:
            if (s->suite)
                return err("%s", "second ServerHello");
            tr_add(s, m, 4 + l);
            if (server_hello(s, m + 4, l) != 0)
                return -1;
            break;
        case 8:  /* EncryptedExtensions */
        case 11: /* Certificate: not parsed */
        case 15: /* CertificateVerify: not checked */
            if (!s->suite)
                return err("%s", "encrypted message before ServerHello");
            tr_add(s, m, 4 + l);
            break;
        case 13:
            return err("%s", "the server asks for a client certificate");
        case 20:
            if (!s->suite)
                return err("%s", "Finished before ServerHello");
            if (server_finished(s, idx, m + 4, l, m, 4 + l) != 0)
                return -1;
            break;
        default: {
            char t[16];
            snprintf(t, sizeof t, "%d", m[0]);
            return err("unexpected handshake message %s", t);
        }
        }
    }
    memmove(s->mbuf, s->mbuf + off, s->mlen - off);
    s->mlen -= off;
    return 0;
}

/* Reads and processes records. 1: response complete, 0: need more, -1: error. */
static int raw_read(slot_t *s, int idx)
{
    for (;;) {
        ssize_t n = recv(s->fd, s->rbuf + s->rlen, RBUF - s->rlen, 0);
        if (n == 0)
            return err("%s", s->app ? "closed before the whole response" : "closed in handshake");
        if (n < 0)
            return (errno == EAGAIN || errno == EINTR) ? 0 : err("recv: %s", strerror(errno));
        s->rlen += (size_t)n;
        size_t off = 0;
        while (s->rlen - off >= 5) {
            uint8_t *r = s->rbuf + off;
            size_t l = (size_t)(r[3] << 8 | r[4]);
            if (l > RBUF - 5)
                return err("%s", "record too large");
            if (s->rlen - off < 5 + l)
                break;
            off += 5 + l;
            if (r[0] == 20) /* ChangeCipherSpec (compatibility mode) */
                continue;
            if (r[0] == 21)
                return err("%s", "alert from the server");
            if (r[0] == 22 && !s->suite) {
                if (hs_bytes(s, idx, r + 5, l) != 0)
                    return -1;
                continue;
            }
            if (r[0] != 23 || !s->suite)
                return err("%s", "unexpected record");
            uint8_t *pt;
            size_t pn;
            int type = open_rec(&s->rd, r, 5 + l, &pt, &pn);
            if (type < 0)
                return err("%s", "record does not authenticate");
            if (type == 22) {
                if (hs_bytes(s, idx, pt, pn) != 0)
                    return -1;
            } else if (type == 23 && s->app) {
                int h = http_take(s, pt, pn);
                if (h != 0)
                    return h;
            } else if (type == 21) {
                return err("%s", "alert (or close_notify) before the whole response");
            } else {
                return err("%s", "unexpected record type");
            }
        }
        memmove(s->rbuf, s->rbuf + off, s->rlen - off);
        s->rlen -= off;
    }
}

/* ------------------------------------------------------------------------------------------
 * Slots
 * ---------------------------------------------------------------------------------------- */

static void slot_close(slot_t *s, int clean)
{
    if (s->ssl) {
        if (clean)
            SSL_shutdown(s->ssl); /* one close_notify, not waiting for the peer's */
        SSL_free(s->ssl);
        s->ssl = NULL;
    } else if (clean && s->app) {
        uint8_t out[64];
        static const uint8_t close_notify[2] = {1, 0};
        size_t o = seal(&s->wr, 21, close_notify, 2, out);
        (void)!send(s->fd, out, o, MSG_NOSIGNAL);
    }
    if (s->fd >= 0) {
        epoll_ctl(g_ep, EPOLL_CTL_DEL, s->fd, NULL);
        close(s->fd);
    }
    s->fd = -1;
    s->state = S_FREE;
}

static int slot_open(slot_t *s, int idx)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    s->t_start = now_ns();
    if (connect(fd, (struct sockaddr *)&g_addr, sizeof g_addr) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    s->fd = fd;
    s->state = S_CONNECTING;
    s->hlen = 0;
    s->body_left = -1;
    s->suite = NULL;
    s->app = 0;
    s->rlen = s->mlen = s->trlen = 0;
    struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)idx};
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev) != 0)
        fail("epoll_ctl");
    return 0;
}

/* SSL_get_error result -> epoll interest; returns 0 to wait, -1 on a real error. */
static int ssl_wait(slot_t *s, int idx, int r, const char *where)
{
    int e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        want(s, idx, EPOLLIN);
        return 0;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        want(s, idx, EPOLLOUT);
        return 0;
    }
    char buf[256] = "";
    unsigned long ec = ERR_peek_error();
    if (ec)
        ERR_error_string_n(ec, buf, sizeof buf);
    err(where, buf);
    return -1;
}

/* -o mode: drives one slot through libssl. 1: response complete, 0: waiting, -1: error. */
static int step_openssl(slot_t *s, int idx)
{
    int r;
    switch (s->state) {
    case S_HANDSHAKE:
        r = SSL_do_handshake(s->ssl);
        if (r != 1)
            return ssl_wait(s, idx, r, "handshake: %s");
        s->t_hs = now_ns();
        if (SSL_session_reused(s->ssl))
            g_resumed++;
        if (!g_proto[0]) {
            snprintf(g_proto, sizeof g_proto, "%s", SSL_get_version(s->ssl));
            snprintf(g_cipher, sizeof g_cipher, "%s", SSL_get_cipher_name(s->ssl));
            const char *gn = SSL_group_to_name(s->ssl, SSL_get_negotiated_group(s->ssl));
            snprintf(g_group, sizeof g_group, "%s", gn ? gn : "?");
        }
        s->state = S_WRITE;
    /* fall through */
    case S_WRITE:
        r = SSL_write(s->ssl, g_req, (int)g_req_len);
        if (r <= 0)
            return ssl_wait(s, idx, r, "write: %s");
        s->state = S_READ;
        want(s, idx, EPOLLIN);
    /* fall through */
    case S_READ:
        for (;;) {
            uint8_t buf[4096];
            r = SSL_read(s->ssl, buf, sizeof buf);
            if (r <= 0) {
                if (SSL_get_error(s->ssl, r) == SSL_ERROR_ZERO_RETURN)
                    return err("%s", "closed before the whole response");
                return ssl_wait(s, idx, r, "read: %s");
            }
            int h = http_take(s, buf, (size_t)r);
            if (h != 0)
                return h;
        }
    }
    return -1;
}

static int step(slot_t *s, int idx)
{
    if (s->state == S_CONNECTING) {
        int e = 0;
        socklen_t el = sizeof e;
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &e, &el);
        if (e != 0) {
            g_conn_errors++;
            return err("connect: %s", strerror(e));
        }
        s->state = S_HANDSHAKE;
        if (g_openssl) {
            s->ssl = SSL_new(g_ctx);
            if (!s->ssl || SSL_set_fd(s->ssl, s->fd) != 1)
                fail("SSL_new");
            SSL_set_connect_state(s->ssl);
            SSL_set_tlsext_host_name(s->ssl, SNI);
            SSL_set_app_data(s->ssl, s);
            if (s->ticket) { /* offered once: a new one comes with this connection, or none */
                SSL_set_session(s->ssl, s->ticket);
                SSL_SESSION_free(s->ticket);
                s->ticket = NULL;
            }
        } else {
            uint8_t ch[512];
            size_t n = client_hello(s, ch);
            if (send(s->fd, ch, n, MSG_NOSIGNAL) != (ssize_t)n)
                return err("send: %s", strerror(errno));
            want(s, idx, EPOLLIN);
            return 0;
        }
    }
    return g_openssl ? step_openssl(s, idx) : raw_read(s, idx);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(const uint32_t *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    return v[(size_t)(p / 100.0 * (double)(n - 1) + 0.5)];
}

/* Counts the tickets the server sends (-o mode); returning 0 means OpenSSL keeps nothing. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    g_tickets++;
    slot_t *s = SSL_get_app_data(ssl);
    if (!g_resume || s == NULL)
        return 0;
    if (s->ticket)
        SSL_SESSION_free(s->ticket);
    s->ticket = sess;
    return 1; /* the slot keeps the reference */
}

/* -o mode: replaces X509_verify_cert, so the client does not build a chain per handshake. */
static int skip_verify(X509_STORE_CTX *x, void *arg)
{
    (void)x;
    (void)arg;
    return 1;
}

static void init_tls(void)
{
    if (g_openssl) {
        g_ctx = SSL_CTX_new(TLS_client_method());
        if (!g_ctx)
            fail("SSL_CTX_new");
        SSL_CTX_set_verify(g_ctx, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_cert_verify_callback(g_ctx, skip_verify, NULL);
        SSL_CTX_set_session_cache_mode(g_ctx,
                                       SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(g_ctx, on_new_session);
        return;
    }
    g_suites[0] = (suite_t){0x1302,
                            "TLS_AES_256_GCM_SHA384",
                            EVP_MD_fetch(NULL, "SHA384", NULL),
                            EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL),
                            48,
                            32};
    g_suites[1] = (suite_t){0x1301,
                            "TLS_AES_128_GCM_SHA256",
                            EVP_MD_fetch(NULL, "SHA256", NULL),
                            EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL),
                            32,
                            16};
    for (int i = 0; i < 2; i++)
        if (!g_suites[i].md || !g_suites[i].aead)
            fail("fetching SHA/AES-GCM");
    g_mdctx = EVP_MD_CTX_new();
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
    size_t pl = sizeof g_pub;
    if (!g_mdctx || !k || EVP_PKEY_get_raw_public_key(k, g_pub, &pl) != 1)
        fail("x25519 key");
    g_derive = EVP_PKEY_CTX_new_from_pkey(NULL, k, NULL);
    if (!g_derive || EVP_PKEY_derive_init(g_derive) <= 0)
        fail("x25519 derive init");
    EVP_PKEY_free(k);
    for (int i = 0; i < 32; i++)
        g_sid[i] = (uint8_t)(i * 37 + 11);
    g_rand ^= (uint64_t)now_ns();
}

int main(int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "-o") == 0 || strcmp(argv[1], "-r") == 0)) {
        g_openssl = 1;
        g_resume = argv[1][1] == 'r';
        argv++;
        argc--;
    }
    if (argc < 6) {
        fprintf(stderr, "usage: tlsload [-o | -r] HOST PORT PATH CONNS SECONDS [WARMUP_S]\n");
        return 2;
    }
    memset(&g_addr, 0, sizeof g_addr);
    g_addr.sin_family = AF_INET;
    g_addr.sin_port = htons((uint16_t)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &g_addr.sin_addr) != 1) {
        fprintf(stderr, "tlsload: bad address %s\n", argv[1]);
        return 2;
    }
    int nconns = atoi(argv[4]);
    double seconds = atof(argv[5]), warmup = argc > 6 ? atof(argv[6]) : 1.0;
    if (nconns <= 0 || seconds <= 0) {
        fprintf(stderr, "tlsload: CONNS and SECONDS must be positive\n");
        return 2;
    }
    g_req_len =
        (size_t)snprintf(g_req, sizeof g_req,
                         "GET %s HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n", argv[3]);
    init_tls();

    g_ep = epoll_create1(EPOLL_CLOEXEC);
    slot_t *ss = calloc((size_t)nconns, sizeof *ss);
    size_t cap = 1 << 16, nlat = 0;
    uint32_t *lat = malloc(cap * sizeof *lat), *hs = malloc(cap * sizeof *hs);
    if (g_ep < 0 || !ss || !lat || !hs)
        fail("out of memory");
    for (int i = 0; i < nconns; i++) {
        ss[i].fd = -1;
        ss[i].rd.ctx = EVP_CIPHER_CTX_new();
        ss[i].wr.ctx = EVP_CIPHER_CTX_new();
        if (!ss[i].rd.ctx || !ss[i].wr.ctx)
            fail("EVP_CIPHER_CTX_new");
    }
    int64_t t0 = now_ns();
    int64_t t_rec = t0 + (int64_t)(warmup * 1e9), t_end = t_rec + (int64_t)(seconds * 1e9);
    long done_total = 0, done_window = 0;
    const char *suite_name = NULL;
    double cpu0 = -1, cpu1;
    for (int i = 0; i < nconns; i++)
        if (slot_open(&ss[i], i) != 0)
            fail("connect");
    struct epoll_event evs[256];
    for (;;) {
        int64_t now = now_ns();
        if (cpu0 < 0 && now >= t_rec)
            cpu0 = cpu_s();
        if (now >= t_end)
            break;
        int n = epoll_wait(g_ep, evs, 256, 100);
        if (n < 0 && errno != EINTR)
            fail("epoll_wait");
        for (int k = 0; k < n; k++) {
            int idx = (int)evs[k].data.u32;
            slot_t *s = &ss[idx];
            int r = step(s, idx);
            if (r == 0)
                continue;
            if (r > 0) {
                int64_t t = now_ns();
                done_total++;
                if (!suite_name && s->suite)
                    suite_name = s->suite->name;
                if (s->t_start >= t_rec && t < t_end) {
                    done_window++;
                    if (nlat == cap) {
                        cap *= 2;
                        lat = realloc(lat, cap * sizeof *lat);
                        hs = realloc(hs, cap * sizeof *hs);
                        if (!lat || !hs)
                            fail("out of memory");
                    }
                    lat[nlat] = (uint32_t)((t - s->t_start) / 1000);
                    hs[nlat++] = (uint32_t)((s->t_hs - s->t_start) / 1000);
                }
                slot_close(s, 1);
            } else {
                g_errors++;
                slot_close(s, 0);
                if (g_errors > 1000 && done_total == 0) {
                    fprintf(stderr, "tlsload: 1000 errors and no response: giving up\n");
                    return 2;
                }
            }
            if (slot_open(s, idx) != 0) {
                g_errors++;
                g_conn_errors++;
            }
        }
    }
    cpu1 = cpu_s();
    for (int i = 0; i < nconns; i++)
        if (ss[i].state != S_FREE)
            slot_close(&ss[i], 0);
    if (!g_openssl && suite_name) {
        snprintf(g_proto, sizeof g_proto, "TLSv1.3");
        snprintf(g_cipher, sizeof g_cipher, "%s", suite_name);
        snprintf(g_group, sizeof g_group, "x25519");
    }
    qsort(lat, nlat, sizeof *lat, cmp_u32);
    qsort(hs, nlat, sizeof *hs, cmp_u32);
    printf("{\"client\": \"%s\", \"conns\": %d, \"seconds\": %.1f, \"completed\": %ld, "
           "\"completed_total\": %ld, \"rate\": %.1f, \"errors\": %ld, \"connect_errors\": %ld, "
           "\"bad_status\": %ld, \"resumed\": %ld, \"tickets\": %ld, \"p50_us\": %.0f, "
           "\"p99_us\": %.0f, \"hs_p50_us\": %.0f, \"hs_p99_us\": %.0f, \"client_cpu_s\": %.3f, "
           "\"protocol\": \"%s\", \"cipher\": \"%s\", \"group\": \"%s\"}\n",
           g_openssl ? "openssl" : "raw", nconns, seconds, done_window, done_total,
           (double)done_window / seconds, g_errors, g_conn_errors, g_bad_status, g_resumed,
           g_tickets, pct(lat, nlat, 50), pct(lat, nlat, 99), pct(hs, nlat, 50), pct(hs, nlat, 99),
           cpu1 - cpu0, g_proto, g_cipher, g_group);
    return done_window > 0 ? 0 : 1;
}
