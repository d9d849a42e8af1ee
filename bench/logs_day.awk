# A day of central logs for bench_logs.py: n lines over four services, in the collector's
# format ("<UTC time> <service> <line>"), each service's as it writes them; the request
# id `target` in a few of them. Variables: n, day (YYYY-MM-DDT), target, dir, file.
BEGIN {
  for (i = 0; i < n; i++) {
    s = i % 4
    sec = int(i * 86000 / n)
    t = sprintf("%s%02d:%02d:%02d.%06d+00:00", day, int(sec / 3600), int(sec % 3600 / 60),
                sec % 60, i % 1000000)
    rid = (i % 250000 < 12) ? target : sprintf("%08x-0000-4000-8000-%012d", i, i)
    if (s == 0)
      printf "%s proxy {\"level\":\"info\",\"logger\":\"http.log.access.access\"," \
             "\"msg\":\"handled request\",\"request\":{\"method\":\"GET\"," \
             "\"uri\":\"/api/pins/%d\",\"headers\":{\"X-Request-Id\":[\"%s\"]}}," \
             "\"status\":200,\"duration\":0.004}\n", t, i, rid > (dir "/proxy/" file)
    else if (s == 1)
      printf "%s cms-blue {\"event\": \"request\", \"time\": \"%s\", \"level\": \"info\", " \
             "\"service\": \"cms\", \"env\": \"staging\", \"request_id\": \"%s\", " \
             "\"message\": \"GET /api/pins/{pin_id} 200\", \"method\": \"GET\", " \
             "\"route\": \"/api/pins/{pin_id}\", \"status\": 200, \"duration_ms\": 3.1}\n", \
             t, t, rid > (dir "/cms-blue/" file)
    else if (s == 2)
      printf "%s db %s UTC [%d] lorepin@lorepin/ LOG:  AUDIT: SESSION,1,1,WRITE,INSERT,,," \
             "\"/* request_id='%s' */ INSERT INTO pins (title) VALUES ($1)\",<not logged>\n", \
             t, day, i, rid > (dir "/db/" file)
    else
      printf "%s backup-site P00   INFO: archive-push command end: completed successfully " \
             "(%d ms)\n", t, i % 900 > (dir "/backup-site/" file)
  }
}
