package control

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// Server timeouts. The API's requests and answers are small; generous
// limits only keep idle or stalled clients from holding connections.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 15 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 120 * time.Second
	// shutdownTimeout bounds how long a request in flight holds up a
	// stopping gateway.
	shutdownTimeout = 3 * time.Second
)

// Serve serves h on ln until ctx is done, then shuts down gracefully: it
// stops accepting, closes the connections that never sent a request, waits
// up to shutdownTimeout for requests in flight, then closes what is left.
// It returns nil after a shutdown caused by ctx, or the error that stopped
// the server. Serve closes ln.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	var fresh freshConns
	// stopping is closed when the shutdown begins: it ends the streaming
	// answers (GET /v1/events), which have no end of their own.
	stopping := make(chan struct{})
	srv := &http.Server{
		BaseContext:       serveBase(stopping),
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    16 << 10,
		ConnState:         fresh.track,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("control: serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	close(stopping)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	// http.Server.Shutdown counts a connection that has sent nothing yet
	// (a client's spare, pre-dialled connection) as busy for its first
	// 5 s; it has no request to finish, so it is closed now.
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(sctx) }()
	fresh.closeAll()
	err := <-shut
	<-errc // http.ErrServerClosed once Shutdown has begun
	if err != nil {
		srv.Close()
		return fmt.Errorf("control: shut down server on %s: %w", ln.Addr(), err)
	}
	return nil
}

// freshConns are the server's connections in http.StateNew: accepted, no
// request read yet.
type freshConns struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// track is the server's ConnState hook.
func (f *freshConns) track(c net.Conn, state http.ConnState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case state == http.StateNew && f.closed:
		c.Close() // accepted while shutting down
	case state == http.StateNew:
		if f.conns == nil {
			f.conns = make(map[net.Conn]struct{})
		}
		f.conns[c] = struct{}{}
	default:
		delete(f.conns, c)
	}
}

// closeAll closes the connections still in StateNew and every one that
// the server accepts from now on.
func (f *freshConns) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for c := range f.conns {
		c.Close()
	}
	clear(f.conns)
}
