/* Clocks: monotonic milliseconds for durations and timeouts, wall time for logs. */
#ifndef PT_TIME_H
#define PT_TIME_H

#include <stdint.h>
#include <stdio.h>
#include <time.h>

static inline uint64_t pt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static inline uint64_t pt_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* The loop clock: worker loops read the monotonic clock once per iteration, right after the
 * poll returns (proxy/worker.c), and the timestamps taken while that iteration's events are
 * handled (stream activity and start/end times, upstream activity, the service time) share
 * it, as HAProxy's now_ms does. A request read ~10 clock values; with the loop clock it
 * reads none of its own. Precision is the length of one iteration (microseconds under load).
 * Threads that run no worker loop (the main thread, tests) read the clock each time. */
extern _Thread_local uint64_t pt_loop_clock_us;

static inline uint64_t pt_loop_us(void)
{
    uint64_t t = pt_loop_clock_us;
    return t != 0 ? t : pt_now_us();
}

static inline uint64_t pt_loop_ms(void)
{
    return pt_loop_us() / 1000;
}

/* Wall time `t` (seconds since the epoch) as Envoy's proto3 JSON Timestamp: RFC 3339 UTC
 * with milliseconds ("2026-12-07T21:08:12.345Z"). out needs 32 bytes. */
static inline void pt_time_rfc3339_ms(double t, char out[32])
{
    time_t secs = (time_t)t;
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    int ms = (int)((t - (double)secs) * 1000.0);
    snprintf(out + n, 32 - n, ".%03dZ", ms > 999 ? 999 : ms);
}

/* The same for the current wall time. */
static inline void pt_time_rfc3339_now(char out[32])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    pt_time_rfc3339_ms((double)ts.tv_sec + (double)ts.tv_nsec / 1e9, out);
}

#endif
