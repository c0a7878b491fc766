/* The HTTP filter manager: runs a stream's HTTP filters over request headers, data and
 * trailers (decoders, in config order, ending at the terminal filter) and over response
 * headers, data and trailers (encoders, in reverse order, ending at the connection
 * manager's writer), with Envoy's stop/continue semantics.
 *
 * A message (the request, or the response) flows through positions: the filters, then the
 * sink. At most one position holds it at a time; every position before it has let all of
 * it through, nothing after it has seen what is held. What a hook returns:
 *
 *   headers   PT_CONTINUE    pass them on
 *             PT_STOP        hold them; this filter still sees the data and trailers that
 *                            follow (if it has those hooks) and lets go by returning
 *                            PT_CONTINUE from one of them, or by pt_hfm_continue_*
 *             PT_STOP_ALL    hold them and everything after, unseen, until continued; data
 *                            beyond the buffer limit pauses the source (watermark)
 *   data      PT_CONTINUE    pass on what this filter held (if anything) and this chunk
 *             PT_STOP_BUFFER hold the chunk after what is held (the filter may read it all
 *                            through pt_hfm_decoding_buffer); beyond the limit the stream
 *                            fails: 413 for a request, 500 (or a reset) for a response
 *             PT_STOP        the filter took the chunk (it may have moved the bytes out)
 *   trailers  PT_CONTINUE    pass on what was held, then the trailers
 *             PT_STOP        hold them (after any held data) until continued
 *
 * A filter without a hook lets that part through, except that data and trailers stop
 * unseen at a filter that holds the headers and has no data hook. The terminal filter's
 * returns are ignored: it is the end of the request. The manager owns nothing but the held
 * bytes; the connection manager tells it when the stream is over (pt_hfm_abort) so no hook
 * runs after that. */
#ifndef PT_HTTP_FILTER_MANAGER_H
#define PT_HTTP_FILTER_MANAGER_H

#include <stdint.h>

#include "filters/http_filter.h"
#include "proxy/buf.h"
#include "proxy/http.h"

/* Where the connection manager takes over: the response leaves the encoders here, and the
 * manager reports held bytes past the limit. `stream` is the pt_http_stream_t. */
typedef struct pt_hfm_sink {
    void (*write_headers)(pt_http_stream_t *s, pt_http_headers_t *h, int end_stream);
    void (*write_data)(pt_http_stream_t *s, pt_buf_t *data, int end_stream);
    void (*write_trailers)(pt_http_stream_t *s, pt_http_headers_t *t);
    /* A filter holding the request (PT_STOP_ALL) holds more than the limit: pause (1) or
     * resume (0) reading it. The same for the response (the upstream side pauses). */
    void (*decode_pause)(pt_http_stream_t *s, int pause);
    void (*encode_pause)(pt_http_stream_t *s, int pause);
    /* A filter buffering the body (PT_STOP_BUFFER) went past the limit. */
    void (*decode_overflow)(pt_http_stream_t *s);
    void (*encode_overflow)(pt_http_stream_t *s);
} pt_hfm_sink_t;

/* One direction's state. `at` is the position that holds the message (-1: none). */
typedef struct pt_hfm_dir {
    int16_t at;
    uint8_t why;   /* HFM_WHY_* in the .c: which hook stopped it */
    uint8_t flags; /* HFM_END_HELD, HFM_TRAILERS_HELD, HFM_HEADERS_END, HFM_PAUSED, ... */
    uint16_t npos; /* positions, the sink included; 0 until the headers start */
    pt_http_headers_t *headers;
    pt_http_headers_t *trailers;
    uint32_t limit; /* bytes `at` may hold */
    pt_buf_t held;  /* data held at `at` */
} pt_hfm_dir_t;

typedef struct pt_http_filter_manager {
    pt_http_stream_t *stream;
    const pt_http_filter_t *filters; /* the last one is the terminal filter */
    void *const *state;              /* each filter's per-stream state */
    unsigned nfilters;
    unsigned decoded; /* filters whose decode_headers ran: the encoders are those below */
    uint8_t aborted;  /* PT_HFM_DECODE | PT_HFM_ENCODE: no more hooks that way */
    int16_t current;  /* the filter whose hook runs now, -1 when none */
    uint64_t skip;    /* filters disabled for this stream (bit i: filter i), set before
                       * the request headers: their hooks do not run */
    const pt_hfm_sink_t *sink;
    pt_hfm_dir_t dec, enc;
} pt_http_filter_manager_t;

#define PT_HFM_DECODE 1u
#define PT_HFM_ENCODE 2u

void pt_hfm_init(pt_http_filter_manager_t *m, pt_http_stream_t *s, const pt_http_filter_t *filters,
                 void *const *state, unsigned nfilters, uint32_t limit, const pt_hfm_sink_t *sink);
/* Frees what is held. */
void pt_hfm_dispose(pt_http_filter_manager_t *m);
/* At most this many HTTP filters per connection manager (the skip mask's bits). */
#define PT_HFM_MAX_FILTERS 64
/* Filters that do not run for this stream (disabled by default or by its route). */
static inline void pt_hfm_set_skip(pt_http_filter_manager_t *m, uint64_t skip)
{
    m->skip = skip;
}

/* The request, from the codec. Data is taken (moved out or disposed). */
void pt_hfm_decode_headers(pt_http_filter_manager_t *m, pt_http_headers_t *h, int end_stream);
void pt_hfm_decode_data(pt_http_filter_manager_t *m, pt_buf_t *data, int end_stream);
void pt_hfm_decode_trailers(pt_http_filter_manager_t *m, pt_http_headers_t *t);
/* The response, from the terminal filter or a local reply. */
void pt_hfm_encode_headers(pt_http_filter_manager_t *m, pt_http_headers_t *h, int end_stream);
void pt_hfm_encode_data(pt_http_filter_manager_t *m, pt_buf_t *data, int end_stream);
void pt_hfm_encode_trailers(pt_http_filter_manager_t *m, pt_http_headers_t *t);

/* From a trailers hook (enc: an encoder's): `data` goes on from the next filter, before the
 * trailers (Envoy's addEncodedData/addDecodedData there; a compressor's last bytes). Takes
 * the bytes. */
void pt_hfm_add_data(pt_http_filter_manager_t *m, int enc, pt_buf_t *data);
/* A filter that stopped the request (or response) lets it go on. Nothing if none did. */
void pt_hfm_continue_decoding(pt_http_filter_manager_t *m);
void pt_hfm_continue_encoding(pt_http_filter_manager_t *m);
/* No hook runs that way any more (a local reply ends decoding; the stream's end, both). */
void pt_hfm_abort(pt_http_filter_manager_t *m, unsigned which);

/* The bytes held for the filter that buffers the request body (PT_STOP_BUFFER), for it to
 * read or rewrite; NULL when nothing is held. */
pt_buf_t *pt_hfm_decoding_buffer(pt_http_filter_manager_t *m);
/* A filter that buffers a whole request (envoy.filters.http.buffer) sets its own limit. */
static inline void pt_hfm_set_decode_limit(pt_http_filter_manager_t *m, uint32_t limit)
{
    m->dec.limit = limit;
}

/* The terminal filter has the request headers. */
static inline int pt_hfm_decoding_done(const pt_http_filter_manager_t *m)
{
    return m->decoded == m->nfilters && m->nfilters > 0;
}

#endif
