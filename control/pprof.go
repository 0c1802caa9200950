package control

import (
	"net/http"
	"net/http/pprof"
)

// PathPprof is the prefix of Go's profiler (net/http/pprof) on the
// control API, behind the token like every path but /healthz: the index
// at PathPprof, then cmdline, profile (CPU, ?seconds=N, under the
// server's 30 s write timeout), symbol, trace, and the named profiles
// (allocs, block, goroutine, heap, mutex, threadcreate). For example:
//
//	go tool pprof -http :8000 'http://127.0.0.1:7070/v1/debug/pprof/profile?seconds=10'
//
// (with the token: curl -H "Authorization: Bearer $TOKEN" ... > cpu.pprof).
const PathPprof = "/v1/debug/pprof/"

// pprofRoutes adds the profiler's paths to routes.
func pprofRoutes(routes map[string]route) {
	add := func(path string, h http.Handler) {
		routes[path] = route{method: http.MethodGet, fn: func(w http.ResponseWriter, r *http.Request) error {
			h.ServeHTTP(w, r)
			return nil
		}}
	}
	// pprof.Index serves a named profile only under /debug/pprof/; here
	// it serves the index, whose links are relative, and each profile
	// has its own path.
	add(PathPprof, http.HandlerFunc(pprof.Index))
	add(PathPprof+"cmdline", http.HandlerFunc(pprof.Cmdline))
	add(PathPprof+"profile", http.HandlerFunc(pprof.Profile))
	add(PathPprof+"symbol", http.HandlerFunc(pprof.Symbol))
	add(PathPprof+"trace", http.HandlerFunc(pprof.Trace))
	for _, name := range []string{"allocs", "block", "goroutine", "heap", "mutex", "threadcreate"} {
		add(PathPprof+name, pprof.Handler(name))
	}
}
