-- bench/api.d/report.lua — wrk script for bench/api: after the run, prints one
-- machine-readable line with the latency percentiles (microseconds), the
-- request count, the run time and the error counts.
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "MFBENCH p50_us=%d p90_us=%d p99_us=%d max_us=%d requests=%d duration_us=%d " ..
        "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
        latency:percentile(50), latency:percentile(90), latency:percentile(99),
        latency.max, summary.requests, summary.duration,
        e.connect, e.read, e.write, e.status, e.timeout))
end
