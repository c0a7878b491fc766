/* The HTTP filter manager: stop/continue iteration of a stream's HTTP filters both ways.
 * See http_filter_manager.h for the contract. Both directions share one walk: a direction
 * is a list of positions (filters, then the sink), and only the hook called at a position
 * differs. */
#include "proxy/http_filter_manager.h"

#include <string.h>

/* Why the message stopped at `at`. */
enum {
    HFM_WHY_HEADERS = 1, /* the filter holds the headers; it still sees data, trailers */
    HFM_WHY_ALL,         /* headers held, and everything after them held unseen */
    HFM_WHY_BUFFER,      /* data held, seen by the filter */
    HFM_WHY_DATA,        /* the filter took a chunk and holds the stream (no bytes held) */
    HFM_WHY_TRAILERS,    /* trailers held, seen by the filter, after any held data */
};

/* pt_hfm_dir_t.flags */
enum {
    HFM_HEADERS_END = 1u << 0, /* the headers ended the message */
    HFM_END_HELD = 1u << 1,    /* the message's end is among what is held */
    HFM_TRAILERS_HELD = 1u << 2,
    HFM_PAUSED = 1u << 3,       /* the source was paused for what is held */
    HFM_HEADERS_HELD = 1u << 4, /* the headers have not passed `at` yet */
};

enum { PART_HEADERS, PART_DATA, PART_TRAILERS };

static pt_hfm_dir_t *dir_of(pt_http_filter_manager_t *m, int enc)
{
    return enc ? &m->enc : &m->dec;
}

static unsigned aborted_bit(int enc)
{
    return enc ? PT_HFM_ENCODE : PT_HFM_DECODE;
}

/* The filter at a position, or NULL for the encoders' sink. The decoders' last position is
 * the terminal filter itself. */
static unsigned filter_index(const pt_http_filter_manager_t *m, int enc, unsigned pos)
{
    return enc ? m->enc.npos - 2 - pos : pos;
}

static int is_sink(const pt_http_filter_manager_t *m, int enc, unsigned pos)
{
    return pos + 1 == (enc ? m->enc.npos : m->dec.npos);
}

static int skipped(const pt_http_filter_manager_t *m, unsigned i)
{
    return i < PT_HFM_MAX_FILTERS && ((m->skip >> i) & 1u);
}

static int has_data_hook(const pt_http_filter_manager_t *m, int enc, unsigned pos)
{
    unsigned i = filter_index(m, enc, pos);
    const pt_http_filter_ops_t *ops = m->filters[i].ops;
    if (skipped(m, i))
        return 0;
    return enc ? ops->encode_data != NULL : ops->decode_data != NULL;
}

/* Calls the hook for one part at one position. The sink's returns do not count. */
static int call(pt_http_filter_manager_t *m, int enc, unsigned pos, int part, void *arg, int end)
{
    pt_http_stream_t *s = m->stream;
    if (enc && is_sink(m, enc, pos)) {
        if (part == PART_HEADERS)
            m->sink->write_headers(s, arg, end);
        else if (part == PART_DATA)
            m->sink->write_data(s, arg, end);
        else
            m->sink->write_trailers(s, arg);
        return PT_CONTINUE;
    }
    unsigned i = filter_index(m, enc, pos);
    const pt_http_filter_t *f = &m->filters[i];
    void *st = m->state[i];
    int rc = PT_CONTINUE;
    if (!enc && part == PART_HEADERS)
        m->decoded = i + 1;
    if (skipped(m, i))
        return PT_CONTINUE;
    int16_t outer = m->current; /* a hook may run others (a local reply's encoders) */
    m->current = (int16_t)i;
    if (part == PART_HEADERS) {
        if (!enc) {
            if (f->ops->decode_headers != NULL)
                rc = f->ops->decode_headers(s, f->config, st, arg, end);
        } else if (f->ops->encode_headers != NULL) {
            rc = f->ops->encode_headers(s, f->config, st, arg, end);
        }
    } else if (part == PART_DATA) {
        int (*hook)(pt_http_stream_t *, void *, void *, pt_buf_t *, int) =
            enc ? f->ops->encode_data : f->ops->decode_data;
        if (hook != NULL)
            rc = hook(s, f->config, st, arg, end);
    } else {
        int (*hook)(pt_http_stream_t *, void *, void *, pt_http_headers_t *) =
            enc ? f->ops->encode_trailers : f->ops->decode_trailers;
        if (hook != NULL)
            rc = hook(s, f->config, st, arg);
    }
    m->current = outer;
    return is_sink(m, enc, pos) ? PT_CONTINUE : rc;
}

static int gone(const pt_http_filter_manager_t *m, int enc)
{
    return (m->aborted & aborted_bit(enc)) != 0;
}

/* Holds a chunk at the stopped position; past the limit, pauses the source or fails. */
static void hold(pt_http_filter_manager_t *m, int enc, pt_buf_t *data, int end)
{
    pt_hfm_dir_t *d = dir_of(m, enc);
    pt_buf_move(&d->held, data);
    if (end)
        d->flags |= HFM_END_HELD;
    if (pt_buf_len(&d->held) <= d->limit)
        return;
    if (d->why == HFM_WHY_BUFFER) {
        (enc ? m->sink->encode_overflow : m->sink->decode_overflow)(m->stream);
    } else if (!(d->flags & HFM_PAUSED)) {
        d->flags |= HFM_PAUSED;
        (enc ? m->sink->encode_pause : m->sink->decode_pause)(m->stream, 1);
    }
}

static int flow_data(pt_http_filter_manager_t *m, int enc, unsigned pos, pt_buf_t *data, int end);

/* The headers from `pos` on. 0: they reached the sink; 1: a filter holds them; -1: the
 * stream is over that way. */
static int flow_headers(pt_http_filter_manager_t *m, int enc, unsigned pos)
{
    pt_hfm_dir_t *d = dir_of(m, enc);
    int end = (d->flags & HFM_HEADERS_END) != 0;
    for (; pos < d->npos; pos++) {
        int rc = call(m, enc, pos, PART_HEADERS, d->headers, end);
        if (gone(m, enc))
            return -1;
        if (rc != PT_CONTINUE) {
            d->at = (int16_t)pos;
            d->why =
                rc == PT_STOP_ALL || !has_data_hook(m, enc, pos) ? HFM_WHY_ALL : HFM_WHY_HEADERS;
            d->flags |= HFM_HEADERS_HELD;
            return 1;
        }
    }
    return 0;
}

/* The filter at `pos`, which held the message, let it go (a hook returned PT_CONTINUE):
 * its held headers go on; the held bytes are put in front of `data`. */
static int release_at(pt_http_filter_manager_t *m, int enc, unsigned pos, pt_buf_t *data, int *end)
{
    pt_hfm_dir_t *d = dir_of(m, enc);
    int headers_held = (d->flags & HFM_HEADERS_HELD) != 0;
    d->at = -1;
    d->why = 0;
    d->flags &= ~HFM_HEADERS_HELD;
    if (d->flags & HFM_PAUSED) {
        d->flags &= ~HFM_PAUSED;
        (enc ? m->sink->encode_pause : m->sink->decode_pause)(m->stream, 0);
    }
    if (data != NULL && pt_buf_len(&d->held) > 0) {
        pt_buf_t all = {0};
        pt_buf_move(&all, &d->held);
        pt_buf_move(&all, data);
        pt_buf_move(data, &all);
    }
    if (end != NULL && (d->flags & HFM_END_HELD))
        *end = 1;
    d->flags &= ~HFM_END_HELD;
    if (headers_held)
        return flow_headers(m, enc, pos + 1) < 0 ? -1 : 0;
    return 0;
}

/* Data from `pos` on; takes `data`. Same returns as flow_headers. */
static int flow_data(pt_http_filter_manager_t *m, int enc, unsigned pos, pt_buf_t *data, int end)
{
    pt_hfm_dir_t *d = dir_of(m, enc);
    for (; pos < d->npos; pos++) {
        int stopped_here = d->at == (int16_t)pos;
        if (stopped_here && d->why == HFM_WHY_ALL) {
            hold(m, enc, data, end);
            return 1;
        }
        if (stopped_here && d->why == HFM_WHY_TRAILERS) {
            pt_buf_dispose(data); /* nothing comes after trailers */
            return 1;
        }
        int rc = call(m, enc, pos, PART_DATA, data, end);
        if (gone(m, enc)) {
            pt_buf_dispose(data);
            return -1;
        }
        if (rc == PT_STOP_BUFFER) {
            /* Held headers (HFM_HEADERS_HELD) stay held: they go when the body does. */
            d->at = (int16_t)pos;
            d->why = HFM_WHY_BUFFER;
            hold(m, enc, data, end);
            return 1;
        }
        if (rc != PT_CONTINUE) {
            /* The filter took the chunk. */
            pt_buf_dispose(data);
            if (!stopped_here) {
                d->at = (int16_t)pos;
                d->why = HFM_WHY_DATA;
            }
            if (end)
                d->flags |= HFM_END_HELD;
            return 1;
        }
        if (stopped_here && release_at(m, enc, pos, data, &end) < 0) {
            pt_buf_dispose(data);
            return -1;
        }
    }
    return 0;
}

/* Trailers from `pos` on. Same returns as flow_headers. */
static int flow_trailers(pt_http_filter_manager_t *m, int enc, unsigned pos)
{
    pt_hfm_dir_t *d = dir_of(m, enc);
    for (; pos < d->npos; pos++) {
        int stopped_here = d->at == (int16_t)pos;
        if (stopped_here && d->why == HFM_WHY_ALL) {
            d->flags |= HFM_TRAILERS_HELD;
            return 1;
        }
        int rc = call(m, enc, pos, PART_TRAILERS, d->trailers, 0);
        if (gone(m, enc))
            return -1;
        if (rc != PT_CONTINUE) {
            d->at = (int16_t)pos;
            d->why = HFM_WHY_TRAILERS;
            d->flags |= HFM_TRAILERS_HELD;
            return 1;
        }
        if (stopped_here) {
            /* Held headers and bytes go first, then the trailers, from the next position. */
            pt_buf_t held = {0};
            if (release_at(m, enc, pos, &held, NULL) < 0) {
                pt_buf_dispose(&held);
                return -1;
            }
            if (pt_buf_len(&held) > 0 && flow_data(m, enc, pos + 1, &held, 0) < 0)
                return -1;
        }
    }
    return 0;
}

/* Continues after the filter at `at` lets go, from outside its hooks. */
static void resume(pt_http_filter_manager_t *m, int enc)
{
    pt_hfm_dir_t *d = dir_of(m, enc);
    if (d->at < 0 || gone(m, enc))
        return;
    unsigned pos = (unsigned)d->at;
    uint8_t why = d->why;
    int end = 0;
    int trailers = (d->flags & HFM_TRAILERS_HELD) != 0;
    d->flags &= ~HFM_TRAILERS_HELD;
    pt_buf_t held = {0};
    /* HFM_WHY_ALL held everything unseen: it starts again at this filter. */
    unsigned next = why == HFM_WHY_ALL ? pos : pos + 1;
    pt_buf_move(&held, &d->held);
    if (release_at(m, enc, pos, NULL, &end) < 0) {
        pt_buf_dispose(&held);
        return;
    }
    if (pt_buf_len(&held) > 0 || (end && !trailers)) {
        if (flow_data(m, enc, next, &held, end && !trailers) < 0)
            return;
    }
    pt_buf_dispose(&held);
    if (trailers)
        flow_trailers(m, enc, next);
}

void pt_hfm_add_data(pt_http_filter_manager_t *m, int enc, pt_buf_t *data)
{
    if (m->current < 0 || gone(m, enc) || pt_buf_len(data) == 0) {
        pt_buf_dispose(data);
        return;
    }
    unsigned i = (unsigned)m->current;
    unsigned pos = enc ? (unsigned)m->enc.npos - 2 - i : i;
    flow_data(m, enc, pos + 1, data, 0);
}

void pt_hfm_init(pt_http_filter_manager_t *m, pt_http_stream_t *s, const pt_http_filter_t *filters,
                 void *const *state, unsigned nfilters, uint32_t limit, const pt_hfm_sink_t *sink)
{
    memset(m, 0, sizeof(*m));
    m->stream = s;
    m->filters = filters;
    m->state = state;
    m->nfilters = nfilters;
    m->dec.limit = m->enc.limit = limit;
    m->sink = sink;
    m->dec.at = m->enc.at = -1;
    m->current = -1;
}

void pt_hfm_dispose(pt_http_filter_manager_t *m)
{
    pt_buf_dispose(&m->dec.held);
    pt_buf_dispose(&m->enc.held);
}

void pt_hfm_abort(pt_http_filter_manager_t *m, unsigned which)
{
    m->aborted |= (uint8_t)which;
}

void pt_hfm_decode_headers(pt_http_filter_manager_t *m, pt_http_headers_t *h, int end_stream)
{
    m->dec.headers = h;
    m->dec.npos = (uint16_t)m->nfilters;
    if (end_stream)
        m->dec.flags |= HFM_HEADERS_END;
    if (m->nfilters > 0 && !gone(m, 0))
        flow_headers(m, 0, 0);
}

void pt_hfm_decode_data(pt_http_filter_manager_t *m, pt_buf_t *data, int end_stream)
{
    if (gone(m, 0) || m->dec.npos == 0) {
        pt_buf_dispose(data);
        return;
    }
    flow_data(m, 0, 0, data, end_stream);
}

void pt_hfm_decode_trailers(pt_http_filter_manager_t *m, pt_http_headers_t *t)
{
    m->dec.trailers = t;
    if (!gone(m, 0) && m->dec.npos > 0)
        flow_trailers(m, 0, 0);
}

void pt_hfm_encode_headers(pt_http_filter_manager_t *m, pt_http_headers_t *h, int end_stream)
{
    /* The encoders are the filters whose decode_headers ran, the terminal one excepted. */
    unsigned top = m->decoded < m->nfilters ? m->decoded : (m->nfilters ? m->nfilters - 1 : 0);
    m->enc.headers = h;
    m->enc.npos = (uint16_t)(top + 1);
    if (end_stream)
        m->enc.flags |= HFM_HEADERS_END;
    if (!gone(m, 1))
        flow_headers(m, 1, 0);
}

void pt_hfm_encode_data(pt_http_filter_manager_t *m, pt_buf_t *data, int end_stream)
{
    if (gone(m, 1) || m->enc.npos == 0) {
        pt_buf_dispose(data);
        return;
    }
    flow_data(m, 1, 0, data, end_stream);
}

void pt_hfm_encode_trailers(pt_http_filter_manager_t *m, pt_http_headers_t *t)
{
    m->enc.trailers = t;
    if (!gone(m, 1) && m->enc.npos > 0)
        flow_trailers(m, 1, 0);
}

void pt_hfm_continue_decoding(pt_http_filter_manager_t *m)
{
    resume(m, 0);
}

void pt_hfm_continue_encoding(pt_http_filter_manager_t *m)
{
    resume(m, 1);
}

pt_buf_t *pt_hfm_decoding_buffer(pt_http_filter_manager_t *m)
{
    return m->dec.at >= 0 && pt_buf_len(&m->dec.held) > 0 ? &m->dec.held : NULL;
}
