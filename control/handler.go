package control

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"

	"github.com/vipmux/vipmux/registry"
)

// Conns reports live proxied connections per member; dispatch implements it.
// Conns must be safe for concurrent use and must not block.
type Conns interface {
	Conns(k registry.Key, name string) int64
}

// Options configures the API handler.
type Options struct {
	// Registry is the table that the API reads and changes. Required.
	Registry *registry.Registry
	// Shared is mode 2's common IP, from the config's [shared] address. A
	// request with a port and no ip means this address. The zero Addr means
	// not configured: such requests are then refused.
	Shared netip.Addr
	// Token, when not empty, must be presented by every request except
	// GET /healthz as "Authorization: Bearer <Token>"; otherwise the answer
	// is 401. Empty means no authentication.
	Token string
	// TokenFunc, when not nil, is asked for the token on every request
	// instead of Token: the gateway sets it, so that a reload can replace
	// the token (the token file is read again). Empty means no
	// authentication.
	TokenFunc func() string
	// SharedFunc, when not nil, is asked for the shared address on every
	// request instead of Shared: serve sets it, so that a reload can
	// change the address.
	SharedFunc func() netip.Addr
	// Conns reports live connections per member for /v1/status. Optional.
	Conns Conns
	// Reload, when not nil, serves POST /v1/reload: it re-reads the
	// gateway's configuration and returns the keys that changed. Its
	// errors map to status codes as every handler's do (see status): one
	// that satisfies errors.Is(err, registry.ErrInvalid) (a bad file) is
	// 400, registry.ErrConflict (a key that cannot change now) 409;
	// anything else is 500. The body names the key at fault when the
	// error is a *registry.FieldError or a FieldNamer. Without it the path
	// is 404.
	Reload func(ctx context.Context) ([]string, error)
	// Health, when not nil, is asked by every GET /healthz: nil means
	// healthy (200 {"ok":true}); an error is 503 with the error's text,
	// so that a load balancer or systemd's watchdog sees a gateway that
	// can no longer serve (its front link gone, its stack closed). Nil:
	// /healthz always answers 200.
	Health func() error
	// Metrics, when set, serves GET /metrics (the Prometheus text format;
	// package metrics). It needs the token like every other path but
	// /healthz. Nil: /metrics is 404.
	Metrics http.Handler
	// Capture, when set, serves GET /v1/capture (PathCapture): the front
	// NIC's frames as a pcap stream. Nil: the path is 404.
	Capture Capturer
	// Cluster, when set, serves GET /v1/cluster/status and POST
	// /v1/cluster/rebalance; an error of its is 503. Nil: both are 404.
	Cluster Cluster
	// Logger receives one Info line per successful change and one Error
	// line per internal error. Required.
	Logger *slog.Logger
}

// server is the http.Handler that NewHandler returns.
type server struct {
	reg    *registry.Registry
	shared netip.Addr
	// tokenSum is the SHA-256 of the token; comparing sums in constant time
	// hides the token's length as well as its content.
	tokenSum [sha256.Size]byte
	auth     bool
	// tokenFunc is Options.TokenFunc; when set, it replaces tokenSum and
	// auth.
	tokenFunc func() string
	conns     Conns
	log       *slog.Logger
	routes    map[string]route
	// feed streams the table's changes to GET /v1/events.
	feed *feed

	// sharedFunc and reload are Options.SharedFunc and Options.Reload.
	sharedFunc func() netip.Addr
	reload     func(ctx context.Context) ([]string, error)
	// healthFn is Options.Health.
	healthFn func() error
	// cluster is Options.Cluster.
	cluster Cluster
}

// route is one endpoint: the method it accepts, whether it needs the token,
// and its handler.
type route struct {
	method string
	open   bool // no token needed
	fn     func(w http.ResponseWriter, r *http.Request) error
}

// NewHandler returns the control API as an http.Handler. It checks opts and
// holds no goroutines; serve it with Serve.
func NewHandler(opts Options) (http.Handler, error) {
	if opts.Registry == nil {
		return nil, errors.New("control: Options.Registry is required")
	}
	if opts.Logger == nil {
		return nil, errors.New("control: Options.Logger is required")
	}
	if opts.Shared.IsValid() && opts.Shared.Zone() != "" {
		return nil, fmt.Errorf("control: shared address %s must not have a zone", opts.Shared)
	}
	s := &server{
		reg:    opts.Registry,
		shared: opts.Shared.Unmap(),
		auth:   opts.Token != "",
		conns:  opts.Conns,

		tokenFunc: opts.TokenFunc,
		log:       opts.Logger,

		sharedFunc: opts.SharedFunc,
		reload:     opts.Reload,
		healthFn:   opts.Health,
		cluster:    opts.Cluster,
	}
	if s.auth {
		s.tokenSum = sha256.Sum256([]byte(opts.Token))
	}
	s.routes = map[string]route{
		PathRegister:      {method: http.MethodPost, fn: s.register},
		PathRegisterBatch: {method: http.MethodPost, fn: s.registerBatch},
		PathDeregister:    {method: http.MethodPost, fn: s.deregister},
		PathSwitch:        {method: http.MethodPost, fn: s.switchTo},
		PathRenew:         {method: http.MethodPost, fn: s.renew},
		PathStatus:        {method: http.MethodGet, fn: s.status},
		PathHealth:        {method: http.MethodGet, open: true, fn: s.health},
		PathDebugVars:     {method: http.MethodGet, fn: s.debugVars},
		PathMaint:         {method: http.MethodPost, fn: s.maint},
		PathEvents:        {method: http.MethodGet, fn: s.events},
	}
	pprofRoutes(s.routes)
	if opts.Capture != nil {
		s.routes[PathCapture] = s.captureRoute(opts.Capture)
	}
	s.feed = &feed{}
	s.reg.Watch(s.feed.watch)
	if s.reload != nil {
		s.routes[PathReload] = route{method: http.MethodPost, fn: s.reloadConfig}
	}
	if s.cluster != nil {
		s.routes[PathClusterStatus] = route{method: http.MethodGet, fn: s.clusterStatus}
		s.routes[PathClusterRebalance] = route{method: http.MethodPost, fn: s.clusterRebalance}
	}
	if opts.Metrics != nil {
		s.routes[PathMetrics] = route{method: http.MethodGet, fn: func(w http.ResponseWriter, r *http.Request) error {
			opts.Metrics.ServeHTTP(w, r)
			return nil
		}}
	}
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt, ok := s.routes[r.URL.Path]
	if !ok || !rt.open {
		if !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="vipmux"`)
			// A client without the token keeps no connection open.
			w.Header().Set("Connection", "close")
			s.fail(w, r, &httpError{code: http.StatusUnauthorized, msg: "missing or wrong bearer token"})
			return
		}
	}
	if !ok {
		s.fail(w, r, &httpError{code: http.StatusNotFound, msg: fmt.Sprintf("no such endpoint %s", r.URL.Path)})
		return
	}
	if r.Method != rt.method {
		w.Header().Set("Allow", rt.method)
		s.fail(w, r, &httpError{code: http.StatusMethodNotAllowed, msg: fmt.Sprintf("%s wants %s, not %s", r.URL.Path, rt.method, r.Method)})
		return
	}
	if err := rt.fn(w, r); err != nil {
		s.fail(w, r, err)
	}
}

// authorized reports whether r carries the token (or no token is needed).
func (s *server) authorized(r *http.Request) bool {
	want, auth := s.tokenSum, s.auth
	if s.tokenFunc != nil {
		tok := s.tokenFunc()
		want, auth = sha256.Sum256([]byte(tok)), tok != ""
	}
	if !auth {
		return true
	}
	scheme, cred, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(cred)))
	return subtle.ConstantTimeCompare(sum[:], want[:]) == 1
}

// writeJSON answers with code and v as JSON.
func writeJSON(w http.ResponseWriter, code int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	// An error here means the client went away; there is no one to tell.
	_ = json.NewEncoder(w).Encode(v)
}

// decode reads r's body, at most MaxRequestBody bytes, as exactly one JSON
// object into v, rejecting unknown fields and trailing data.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	return decodeMax(w, r, v, MaxRequestBody)
}

// decodeMax is decode with a body limit of max bytes.
func decodeMax(w http.ResponseWriter, r *http.Request, v any, max int64) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, max))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	var extra json.RawMessage
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
		return nil
	case errors.As(err, new(*http.MaxBytesError)):
		return err
	default:
		return &httpError{code: http.StatusBadRequest, msg: "trailing data after the JSON object"}
	}
}

// key resolves a request's ip and port into a binding key. An empty ip with
// a port means the shared address.
func (s *server) key(ip string, port *int, portRequired bool) (registry.Key, error) {
	var k registry.Key
	switch {
	case port == nil && portRequired:
		return k, registry.Invalid("port", "missing: give the binding's port (1..65535)")
	case port == nil:
	case *port < 1 || *port > 65535:
		return k, registry.Invalid("port", "%d is out of range 1..65535", *port)
	default:
		k.Port = uint16(*port)
	}
	if ip == "" {
		if port == nil {
			return k, registry.Invalid("ip", "missing: give ip (every port of it), or port (on the shared address)")
		}
		shared := s.sharedAddr()
		if !shared.IsValid() {
			return k, registry.Invalid("shared.address", "no ip given and no shared address configured: set [shared] address in the gateway's config, or give ip")
		}
		k.IP = shared
		return k, nil
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return k, registry.Invalid("ip", "%q is not an IP address", ip)
	}
	k.IP = a.Unmap()
	return k, nil
}

// parseBackend parses "HOST" or "HOST:PORT" with HOST an IP literal.
func parseBackend(s string) (netip.AddrPort, error) {
	if s == "" {
		return netip.AddrPort{}, registry.Invalid("backend", "missing: give HOST or HOST:PORT, HOST an IP address")
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	host := s
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		host = s[1 : len(s)-1]
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, registry.Invalid("backend", "%q: want HOST or HOST:PORT with HOST an IP address ([IPv6]:PORT)", s)
	}
	return netip.AddrPortFrom(a.Unmap(), 0), nil
}

// sharedAddr is mode 2's common IP now; the zero Addr when none.
func (s *server) sharedAddr() netip.Addr {
	if s.sharedFunc != nil {
		return s.sharedFunc().Unmap()
	}
	return s.shared
}

// view converts a binding to its API form.
func (s *server) view(b *registry.Binding) BindingView {
	v := BindingView{IP: b.IP.String(), Port: int(b.Port), Members: make([]MemberView, 0, len(b.Members))}
	for _, m := range b.Members {
		mv := MemberView{
			Name:    m.Name,
			Backend: formatBackend(m.Backend),
			State:   string(m.State),
			Since:   m.Since,
			Down:    m.Down,
			Reason:  m.Reason,
			// Typed forms of Down's and Reason's why.
			DownCause: string(m.DownCause),
			Cause:     string(m.Cause),
			// FailedOver only matters while the member can fail back.
			FailedOver: m.FailedOver,
			// Empty (omitted) when no header is sent.
			ProxyProtocol: string(m.ProxyProtocol),
		}
		if s.conns != nil {
			mv.Connections = s.conns.Conns(b.Key, m.Name)
		}
		if m.TTL > 0 {
			mv.TTL, mv.Expires = m.TTL.String(), m.Expires
		}
		v.Members = append(v.Members, mv)
	}
	return v
}

// formatBackend formats a backend as parseBackend reads it: the bare IP when
// the port is 0 (the client's port), else IP:PORT.
func formatBackend(ap netip.AddrPort) string {
	if ap.Port() == 0 {
		return ap.Addr().String()
	}
	return ap.String()
}
