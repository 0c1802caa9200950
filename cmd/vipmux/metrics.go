package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"github.com/vipmux/vipmux/config"
	"github.com/vipmux/vipmux/control"
)

// listenMetrics opens [metrics] listen; nil when it is not configured.
func listenMetrics(cfg config.Metrics) (net.Listener, error) {
	if cfg.Listen == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("metrics.listen: %w", err)
	}
	return ln, nil
}

// serveMetrics serves only GET /metrics (h, without the control token) on
// ln until ctx is done. A failure is logged: the gateway goes on without
// the second listener, /metrics stays on the control listener.
func serveMetrics(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) {
	mux := http.NewServeMux()
	mux.Handle("GET "+control.PathMetrics, h)
	log.Info("serving metrics", "listen", ln.Addr().String(), "path", control.PathMetrics)
	if err := control.Serve(ctx, ln, mux); err != nil {
		log.Error("metrics listener stopped", "listen", ln.Addr().String(), "err", err)
	}
}
