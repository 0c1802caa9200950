// Command namesrv is the kernel test server of the e2e suite. It runs inside a
// server namespace and answers with its own name, so a test can tell which
// server computer a connection reached.
//
//	namesrv --name web-a --listen :8080 --listen :9090 --raw :7000 --proxy :8180
//
// HTTP, on every --listen address (keep-alive and Connection: close both work):
//
//	GET  /                  → "web-a\n"
//	GET  /bytes?n=N&seed=S  → the N bytes of pattern.NewReader(S, N)
//	POST /sha256            → hex sha256 of the request body + "\n"
//
// Raw TCP, on every --raw address: read until the client half-closes, then
// write "web-a got N bytes sha256=HEX\n" and close.
//
// HTTP behind the PROXY protocol, on every --proxy address: each connection
// may start with a PROXY protocol v1 or v2 header (parsed by
// github.com/pires/go-proxyproto); the same endpoints as --listen, plus
//
//	GET  /whoami            → "web-a proxy=v2 client=IP:PORT front=IP:PORT peer=IP:PORT\n"
//
// where client and front are the header's source and destination (the
// socket's addresses when there is no header, proxy=none) and peer is the
// socket's remote address (the gateway).
//
// SIGTERM and SIGINT stop it with exit status 0.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"github.com/vipmux/vipmux/e2e/pattern"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	var (
		name   = flag.String("name", "", "the server's name, sent in every answer")
		listen listFlag
		raw    listFlag
		proxy  listFlag
	)
	flag.Var(&listen, "listen", "HTTP listen address (repeatable)")
	flag.Var(&raw, "raw", "raw half-close TCP listen address (repeatable)")
	flag.Var(&proxy, "proxy", "HTTP listen address whose connections may start with a PROXY protocol header (repeatable)")
	flag.Parse()
	if *name == "" || len(listen)+len(raw)+len(proxy) == 0 {
		log.Fatal("namesrv: need --name and at least one --listen, --raw or --proxy")
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	var wg sync.WaitGroup
	var servers []*http.Server
	var rawLns []net.Listener
	for _, addr := range listen {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			log.Fatalf("namesrv: listen %s: %v", addr, err)
		}
		srv := &http.Server{Handler: handler(*name), ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, srv)
		wg.Go(func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Printf("namesrv: serve %s: %v", addr, err)
			}
		})
	}
	for _, addr := range proxy {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			log.Fatalf("namesrv: listen %s: %v", addr, err)
		}
		// USE makes the header optional. The specification tells a real
		// receiver not to guess (the library's default, REQUIRE), but this
		// test server must see, and report, connections without one.
		pln := &proxyproto.Listener{
			Listener:          ln,
			Policy:            func(net.Addr) (proxyproto.Policy, error) { return proxyproto.USE, nil },
			ReadHeaderTimeout: 10 * time.Second,
		}
		srv := &http.Server{
			Handler:           proxyHandler(*name),
			ReadHeaderTimeout: 10 * time.Second,
			ConnContext: func(ctx context.Context, c net.Conn) context.Context {
				return context.WithValue(ctx, connKey{}, c)
			},
		}
		servers = append(servers, srv)
		wg.Go(func() {
			if err := srv.Serve(pln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Printf("namesrv: serve %s: %v", addr, err)
			}
		})
	}
	for _, addr := range raw {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			log.Fatalf("namesrv: listen %s: %v", addr, err)
		}
		rawLns = append(rawLns, ln)
		wg.Go(func() { serveRaw(ln, *name) })
	}
	log.Printf("namesrv %s: listening http=%v raw=%v proxy=%v", *name, listen, raw, proxy)

	<-ctx.Done()
	for _, ln := range rawLns {
		ln.Close()
	}
	for _, srv := range servers {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
		cancel()
	}
	wg.Wait()
}

func handler(name string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, name+"\n")
	})
	mux.HandleFunc("GET /bytes", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "bad n", http.StatusBadRequest)
			return
		}
		seed, err := strconv.ParseUint(r.URL.Query().Get("seed"), 10, 64)
		if err != nil {
			http.Error(w, "bad seed", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("X-Server", name)
		io.CopyBuffer(w, pattern.NewReader(seed, n), make([]byte, 256<<10))
	})
	mux.HandleFunc("POST /sha256", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		if _, err := io.CopyBuffer(h, r.Body, make([]byte, 256<<10)); err != nil {
			http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Server", name)
		io.WriteString(w, hex.EncodeToString(h.Sum(nil))+"\n")
	})
	// A webhook receiver (e2e TestNotify): each body goes to the log as
	// one line, "hook: BODY".
	mux.HandleFunc("POST /hook", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
		if err != nil {
			http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
			return
		}
		log.Printf("hook: %s", bytes.TrimSpace(body))
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

// connKey is the context key of a request's connection on --proxy.
type connKey struct{}

// proxyHandler is handler plus GET /whoami, which reports what the PROXY
// protocol header of the request's connection said.
func proxyHandler(name string) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", handler(name))
	mux.HandleFunc("GET /whoami", func(w http.ResponseWriter, r *http.Request) {
		c, ok := r.Context().Value(connKey{}).(*proxyproto.Conn)
		if !ok {
			http.Error(w, "not a PROXY protocol connection", http.StatusInternalServerError)
			return
		}
		version := "none"
		if h := c.ProxyHeader(); h != nil {
			version = fmt.Sprintf("v%d", h.Version)
		}
		fmt.Fprintf(w, "%s proxy=%s client=%s front=%s peer=%s\n", name, version, c.RemoteAddr(), c.LocalAddr(), c.Raw().RemoteAddr())
	})
	return mux
}

func serveRaw(ln net.Listener, name string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				log.Printf("namesrv: accept %s: %v", ln.Addr(), err)
			}
			return
		}
		go func() {
			defer c.Close()
			h := sha256.New()
			n, err := io.CopyBuffer(h, c, make([]byte, 64<<10))
			if err != nil {
				log.Printf("namesrv: raw read from %s: %v", c.RemoteAddr(), err)
				return
			}
			fmt.Fprintf(c, "%s got %d bytes sha256=%s\n", name, n, hex.EncodeToString(h.Sum(nil)))
		}()
	}
}
