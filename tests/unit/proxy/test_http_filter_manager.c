/* The HTTP filter manager with scripted filters: the order hooks run in both ways, what a
 * stop holds and where it resumes, the limits, and that nothing runs after an abort. */
#include "proxy/http_filter_manager.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "pt_test.h"

/* What a scripted filter answers, per part, and whether it has data/trailer hooks. */
typedef struct script {
    char name;
    int headers_rc, data_rc, trailers_rc;
    int data_rc_at_end; /* answer to the data chunk that ends the message (-1: data_rc) */
    int no_data_hooks;
    int local_reply_on_headers; /* aborts decoding from decode_headers */
} script_t;

static char calls[2048];
static pt_buf_t sink_body;
static int sink_end, sink_trailers, paused_dec, paused_enc, overflow_dec, overflow_enc;
static pt_http_filter_manager_t fm;
static pt_http_headers_t req_h, req_t, resp_h, resp_t;

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
    size_t n = strlen(calls);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(calls + n, sizeof(calls) - n, fmt, ap);
    va_end(ap);
}

static int on_headers(pt_http_stream_t *s, void *cfg, void *st, pt_http_headers_t *h, int end,
                      int enc)
{
    (void)s;
    (void)st;
    (void)h;
    script_t *sc = cfg;
    logf_("%c%sH%s ", sc->name, enc ? "<" : ">", end ? "e" : "");
    if (!enc && sc->local_reply_on_headers) {
        pt_hfm_abort(&fm, PT_HFM_DECODE);
        return PT_STOP;
    }
    return sc->headers_rc;
}

static int on_data(pt_http_stream_t *s, void *cfg, void *st, pt_buf_t *d, int end, int enc)
{
    (void)s;
    (void)st;
    script_t *sc = cfg;
    logf_("%c%sD%zu%s ", sc->name, enc ? "<" : ">", pt_buf_len(d), end ? "e" : "");
    if (end && sc->data_rc_at_end >= 0)
        return sc->data_rc_at_end;
    return sc->data_rc;
}

static int on_trailers(pt_http_stream_t *s, void *cfg, void *st, pt_http_headers_t *t, int enc)
{
    (void)s;
    (void)st;
    (void)t;
    script_t *sc = cfg;
    logf_("%c%sT ", sc->name, enc ? "<" : ">");
    return sc->trailers_rc;
}

static int dh(pt_http_stream_t *s, void *c, void *st, pt_http_headers_t *h, int e)
{
    return on_headers(s, c, st, h, e, 0);
}
static int dd(pt_http_stream_t *s, void *c, void *st, pt_buf_t *d, int e)
{
    return on_data(s, c, st, d, e, 0);
}
static int dt(pt_http_stream_t *s, void *c, void *st, pt_http_headers_t *t)
{
    return on_trailers(s, c, st, t, 0);
}
static int eh(pt_http_stream_t *s, void *c, void *st, pt_http_headers_t *h, int e)
{
    return on_headers(s, c, st, h, e, 1);
}
static int ed(pt_http_stream_t *s, void *c, void *st, pt_buf_t *d, int e)
{
    return on_data(s, c, st, d, e, 1);
}
static int et(pt_http_stream_t *s, void *c, void *st, pt_http_headers_t *t)
{
    return on_trailers(s, c, st, t, 1);
}

/* The terminal filter keeps the request body it gets, to check it arrived whole. */
static pt_buf_t terminal_body;
static int terminal_dd(pt_http_stream_t *s, void *c, void *st, pt_buf_t *d, int e)
{
    on_data(s, c, st, d, e, 0);
    pt_buf_move(&terminal_body, d);
    return PT_CONTINUE;
}

static const pt_http_filter_ops_t full_ops = {.name = "full",
                                              .decode_headers = dh,
                                              .decode_data = dd,
                                              .decode_trailers = dt,
                                              .encode_headers = eh,
                                              .encode_data = ed,
                                              .encode_trailers = et};
static const pt_http_filter_ops_t headers_only_ops = {
    .name = "headers", .decode_headers = dh, .encode_headers = eh};
static const pt_http_filter_ops_t terminal_ops = {.name = "terminal",
                                                  .terminal = 1,
                                                  .decode_headers = dh,
                                                  .decode_data = terminal_dd,
                                                  .decode_trailers = dt};

static void w_headers(pt_http_stream_t *s, pt_http_headers_t *h, int end)
{
    (void)s;
    (void)h;
    logf_("W:H%s ", end ? "e" : "");
    sink_end |= end;
}
static void w_data(pt_http_stream_t *s, pt_buf_t *d, int end)
{
    (void)s;
    logf_("W:D%zu%s ", pt_buf_len(d), end ? "e" : "");
    pt_buf_move(&sink_body, d);
    sink_end |= end;
}
static void w_trailers(pt_http_stream_t *s, pt_http_headers_t *t)
{
    (void)s;
    (void)t;
    logf_("W:T ");
    sink_trailers = 1;
}
static void p_dec(pt_http_stream_t *s, int p)
{
    (void)s;
    paused_dec = p;
}
static void p_enc(pt_http_stream_t *s, int p)
{
    (void)s;
    paused_enc = p;
}
static void o_dec(pt_http_stream_t *s)
{
    (void)s;
    overflow_dec++;
    pt_hfm_abort(&fm, PT_HFM_DECODE);
}
static void o_enc(pt_http_stream_t *s)
{
    (void)s;
    overflow_enc++;
    pt_hfm_abort(&fm, PT_HFM_ENCODE);
}
static const pt_hfm_sink_t sink = {.write_headers = w_headers,
                                   .write_data = w_data,
                                   .write_trailers = w_trailers,
                                   .decode_pause = p_dec,
                                   .encode_pause = p_enc,
                                   .decode_overflow = o_dec,
                                   .encode_overflow = o_enc};

static script_t sa, sb, sterm;
static pt_http_filter_t chain[3];
static void *states[3];

/* Two filters (a, b) and the terminal (t); a and b with every hook unless told. */
static void setup(uint32_t limit, int a_full, int b_full)
{
    pt_hfm_dispose(&fm);
    pt_buf_dispose(&sink_body);
    pt_buf_dispose(&terminal_body);
    calls[0] = '\0';
    sink_end = sink_trailers = paused_dec = paused_enc = overflow_dec = overflow_enc = 0;
    sa = (script_t){.name = 'a', .data_rc_at_end = -1};
    sb = (script_t){.name = 'b', .data_rc_at_end = -1};
    sterm = (script_t){.name = 't', .data_rc_at_end = -1};
    chain[0] = (pt_http_filter_t){.ops = a_full ? &full_ops : &headers_only_ops, .config = &sa};
    chain[1] = (pt_http_filter_t){.ops = b_full ? &full_ops : &headers_only_ops, .config = &sb};
    chain[2] = (pt_http_filter_t){.ops = &terminal_ops, .config = &sterm};
    pt_hfm_init(&fm, NULL, chain, states, 3, limit, &sink);
}

static void data_in(int enc, const char *bytes, int end)
{
    pt_buf_t b = {0};
    pt_buf_append_str(&b, bytes);
    if (enc)
        pt_hfm_encode_data(&fm, &b, end);
    else
        pt_hfm_decode_data(&fm, &b, end);
    pt_buf_dispose(&b);
}

static void test_everything_flows_in_order(void)
{
    setup(1024, 1, 1);
    pt_hfm_decode_headers(&fm, &req_h, 0);
    data_in(0, "hello", 0);
    pt_hfm_decode_trailers(&fm, &req_t);
    PT_CHECK(pt_hfm_decoding_done(&fm));
    pt_hfm_encode_headers(&fm, &resp_h, 0);
    data_in(1, "world!", 1);
    PT_CHECK_STR(calls, "a>H b>H t>H a>D5 b>D5 t>D5 a>T b>T t>T "
                        "b<H a<H W:H b<D6e a<D6e W:D6e ");
    PT_CHECK_INT(pt_buf_len(&terminal_body), 5);
    PT_CHECK_INT(sink_end, 1);
}

/* A filter without data hooks that stops the headers (a fault delay) holds all after
 * them unseen; its continue sends the headers on, then the data, then the trailers. */
static void test_stop_without_data_hooks_holds_everything(void)
{
    setup(8, 0, 1);
    sa.headers_rc = PT_STOP;
    pt_hfm_decode_headers(&fm, &req_h, 0);
    data_in(0, "12345", 0);
    PT_CHECK_INT(paused_dec, 0);
    data_in(0, "67890", 0);
    PT_CHECK_INT(paused_dec, 1); /* 10 bytes held, limit 8: the source pauses */
    pt_hfm_decode_trailers(&fm, &req_t);
    PT_CHECK_STR(calls, "a>H ");
    PT_CHECK(!pt_hfm_decoding_done(&fm));
    pt_hfm_continue_decoding(&fm);
    PT_CHECK_INT(paused_dec, 0);
    PT_CHECK_STR(calls, "a>H b>H t>H b>D10 t>D10 b>T t>T ");
    /* a second continue does nothing */
    pt_hfm_continue_decoding(&fm);
    PT_CHECK_STR(calls, "a>H b>H t>H b>D10 t>D10 b>T t>T ");
}

/* PT_STOP_ALL from a filter that has data hooks: it sees the held data when continued. */
static void test_stop_all_replays_to_the_filter(void)
{
    setup(1024, 1, 1);
    sa.headers_rc = PT_STOP_ALL;
    pt_hfm_decode_headers(&fm, &req_h, 0);
    data_in(0, "abc", 1);
    PT_CHECK_STR(calls, "a>H ");
    sa.headers_rc = PT_CONTINUE;
    pt_hfm_continue_decoding(&fm);
    PT_CHECK_STR(calls, "a>H b>H t>H a>D3e b>D3e t>D3e ");
}

/* The buffer filter: headers held, body buffered until its end, then all of it at once. */
static void test_buffering_the_whole_body(void)
{
    setup(1024, 1, 1);
    sb.headers_rc = PT_STOP;
    sb.data_rc = PT_STOP_BUFFER;
    sb.data_rc_at_end = PT_CONTINUE;
    pt_hfm_decode_headers(&fm, &req_h, 0);
    data_in(0, "aaa", 0);
    PT_CHECK(pt_hfm_decoding_buffer(&fm) != NULL);
    PT_CHECK_INT(pt_buf_len(pt_hfm_decoding_buffer(&fm)), 3);
    data_in(0, "bbbb", 0);
    data_in(0, "c", 1);
    PT_CHECK_STR(calls, "a>H b>H a>D3 b>D3 a>D4 b>D4 a>D1e b>D1e t>H t>D8e ");
    PT_CHECK_INT(pt_buf_len(&terminal_body), 8);
    PT_CHECK(pt_hfm_decoding_buffer(&fm) == NULL);
}

/* Trailers end a buffered body: the filter sees them, lets go, and the body goes before
 * them, without an end flag. */
static void test_buffered_body_then_trailers(void)
{
    setup(1024, 1, 1);
    sa.headers_rc = PT_STOP;
    sa.data_rc = PT_STOP_BUFFER;
    pt_hfm_decode_headers(&fm, &req_h, 0);
    data_in(0, "xy", 0);
    data_in(0, "z", 0);
    pt_hfm_decode_trailers(&fm, &req_t);
    PT_CHECK_STR(calls, "a>H a>D2 a>D1 a>T b>H t>H b>D3 t>D3 b>T t>T ");
}

/* A trailers hook may hold them too; they go after the held data when continued. */
static void test_trailers_held_then_continued(void)
{
    setup(1024, 1, 1);
    sb.trailers_rc = PT_STOP;
    pt_hfm_decode_headers(&fm, &req_h, 0);
    data_in(0, "q", 0);
    pt_hfm_decode_trailers(&fm, &req_t);
    PT_CHECK_STR(calls, "a>H b>H t>H a>D1 b>D1 t>D1 a>T b>T ");
    pt_hfm_continue_decoding(&fm);
    PT_CHECK_STR(calls, "a>H b>H t>H a>D1 b>D1 t>D1 a>T b>T t>T ");
}

/* A filter that takes chunks (PT_STOP) passes nothing until it continues; the end of the
 * message is not lost. */
static void test_taking_chunks_keeps_the_end(void)
{
    setup(1024, 1, 1);
    sa.data_rc = PT_STOP;
    pt_hfm_decode_headers(&fm, &req_h, 0);
    data_in(0, "12", 0);
    data_in(0, "34", 1);
    PT_CHECK_STR(calls, "a>H b>H t>H a>D2 a>D2e ");
    pt_hfm_continue_decoding(&fm);
    PT_CHECK_STR(calls, "a>H b>H t>H a>D2 a>D2e b>D0e t>D0e ");
}

/* Past the limit, a buffering filter fails the stream (the sink answers 413) and no hook
 * runs afterwards. */
static void test_buffer_overflow(void)
{
    setup(4, 1, 1);
    sa.headers_rc = PT_STOP;
    sa.data_rc = PT_STOP_BUFFER;
    pt_hfm_decode_headers(&fm, &req_h, 0);
    data_in(0, "123", 0);
    PT_CHECK_INT(overflow_dec, 0);
    data_in(0, "45", 0);
    PT_CHECK_INT(overflow_dec, 1);
    data_in(0, "6", 1);
    pt_hfm_continue_decoding(&fm);
    PT_CHECK_STR(calls, "a>H a>D3 a>D2 ");
}

/* Two stops in a row: the first continue reaches the second filter, which holds the body
 * unseen until it continues too. */
static void test_two_stops_in_a_row(void)
{
    setup(1024, 0, 0);
    sa.headers_rc = PT_STOP;
    sb.headers_rc = PT_STOP;
    pt_hfm_decode_headers(&fm, &req_h, 0);
    data_in(0, "body", 1);
    pt_hfm_continue_decoding(&fm);
    PT_CHECK_STR(calls, "a>H b>H ");
    pt_hfm_continue_decoding(&fm);
    PT_CHECK_STR(calls, "a>H b>H t>H t>D4e ");
}

/* A headers-only request stopped and continued keeps its end flag. */
static void test_headers_only_request(void)
{
    setup(1024, 0, 0);
    sa.headers_rc = PT_STOP;
    pt_hfm_decode_headers(&fm, &req_h, 1);
    pt_hfm_continue_decoding(&fm);
    PT_CHECK_STR(calls, "a>He b>He t>He ");
}

/* A filter answering itself aborts decoding: the filters after it never run, and its
 * answer runs through the encoders of the filters that did (itself and those before). */
static void test_local_reply_encoders(void)
{
    setup(1024, 1, 1);
    sb.local_reply_on_headers = 1;
    pt_hfm_decode_headers(&fm, &req_h, 0);
    pt_hfm_encode_headers(&fm, &resp_h, 1);
    data_in(0, "late", 1);
    PT_CHECK_STR(calls, "a>H b>H b<He a<He W:He ");
}

/* Encoders: one holds the response head and body (PT_STOP_ALL), pausing the upstream
 * past the limit, and lets go in order. */
static void test_encoder_holds_the_response(void)
{
    setup(4, 1, 1);
    pt_hfm_decode_headers(&fm, &req_h, 1);
    calls[0] = '\0';
    sb.headers_rc = PT_STOP_ALL;
    pt_hfm_encode_headers(&fm, &resp_h, 0);
    data_in(1, "abc", 0);
    PT_CHECK_INT(paused_enc, 0);
    data_in(1, "def", 0);
    PT_CHECK_INT(paused_enc, 1);
    pt_hfm_encode_trailers(&fm, &resp_t);
    PT_CHECK_STR(calls, "b<H ");
    pt_hfm_continue_encoding(&fm);
    PT_CHECK_INT(paused_enc, 0);
    PT_CHECK_STR(calls, "b<H a<H W:H b<D6 a<D6 W:D6 b<T a<T W:T ");
    PT_CHECK_INT(pt_buf_len(&sink_body), 6);
    PT_CHECK_INT(sink_trailers, 1);
}

/* An encoder buffering the response body: past the limit the sink fails it (500). */
static void test_encoder_buffer_overflow(void)
{
    setup(4, 1, 1);
    pt_hfm_decode_headers(&fm, &req_h, 1);
    calls[0] = '\0';
    sa.headers_rc = PT_STOP;
    sa.data_rc = PT_STOP_BUFFER;
    pt_hfm_encode_headers(&fm, &resp_h, 0);
    data_in(1, "12345", 0);
    PT_CHECK_INT(overflow_enc, 1);
    data_in(1, "6", 1);
    PT_CHECK_STR(calls, "b<H a<H b<D5 a<D5 "); /* nothing after the failure */
}

/* The body an encoder buffered goes out whole, after the head, at the end of the body. */
static void test_encoder_buffers_whole_body(void)
{
    setup(1024, 1, 1);
    pt_hfm_decode_headers(&fm, &req_h, 1);
    calls[0] = '\0';
    sa.headers_rc = PT_STOP;
    sa.data_rc = PT_STOP_BUFFER;
    sa.data_rc_at_end = PT_CONTINUE;
    pt_hfm_encode_headers(&fm, &resp_h, 0);
    data_in(1, "12", 0);
    data_in(1, "345", 1);
    PT_CHECK_STR(calls, "b<H a<H b<D2 a<D2 b<D3e a<D3e W:H W:D5e ");
    PT_CHECK_INT(sink_end, 1);
}

int main(void)
{
    PT_RUN(test_everything_flows_in_order);
    PT_RUN(test_stop_without_data_hooks_holds_everything);
    PT_RUN(test_stop_all_replays_to_the_filter);
    PT_RUN(test_buffering_the_whole_body);
    PT_RUN(test_buffered_body_then_trailers);
    PT_RUN(test_trailers_held_then_continued);
    PT_RUN(test_taking_chunks_keeps_the_end);
    PT_RUN(test_buffer_overflow);
    PT_RUN(test_two_stops_in_a_row);
    PT_RUN(test_headers_only_request);
    PT_RUN(test_local_reply_encoders);
    PT_RUN(test_encoder_holds_the_response);
    PT_RUN(test_encoder_buffer_overflow);
    PT_RUN(test_encoder_buffers_whole_body);
    pt_hfm_dispose(&fm);
    pt_buf_dispose(&sink_body);
    pt_buf_dispose(&terminal_body);
    PT_TEST_EXIT();
}
