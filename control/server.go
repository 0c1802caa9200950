package control

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

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
	// SharedFunc, when not nil, is asked for the shared address on every
	// request instead of Shared: serve sets it, so that a reload can
	// change the address.
	SharedFunc func() netip.Addr
	// Conns reports live connections per member for /v1/status. Optional.
	Conns Conns
	// Reload, when not nil, serves POST /v1/reload: it re-reads the
	// gateway's configuration and returns the keys that changed. Its
	// errors map to status codes as the registry's do: a
	// *registry.FieldError of kind ErrInvalid (a bad file) is 400, of
	// kind ErrConflict (a key that cannot change now) 409; anything else
	// is 500. Without it the path is 404.
	Reload func(ctx context.Context) ([]string, error)
	// Metrics, when set, serves GET /metrics (the Prometheus text format;
	// package metrics). It needs the token like every other path but
	// /healthz. Nil: /metrics is 404.
	Metrics http.Handler
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
	conns    Conns
	log      *slog.Logger
	routes   map[string]route

	// sharedFunc and reload are Options.SharedFunc and Options.Reload.
	sharedFunc func() netip.Addr
	reload     func(ctx context.Context) ([]string, error)
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
		log:    opts.Logger,

		sharedFunc: opts.SharedFunc,
		reload:     opts.Reload,
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
	}
	if s.reload != nil {
		s.routes[PathReload] = route{method: http.MethodPost, fn: s.reloadConfig}
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
	if !s.auth {
		return true
	}
	scheme, cred, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(cred)))
	return subtle.ConstantTimeCompare(sum[:], s.tokenSum[:]) == 1
}

// httpError is a problem with the HTTP request as such (its path, method,
// credentials or body framing) rather than with the values of its fields.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

// fail answers r with the status and JSON error body for err. It is the one
// place where errors become HTTP status codes.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var (
		he   *httpError
		fe   *registry.FieldError
		mbe  *http.MaxBytesError
		body = errorBody{Error: err.Error()}
		code int
	)
	switch {
	case errors.As(err, &he):
		code = he.code
	case errors.As(err, &mbe):
		code = http.StatusRequestEntityTooLarge
		body.Error = fmt.Sprintf("request body is larger than %d bytes", mbe.Limit)
	case errors.Is(err, registry.ErrInvalid):
		code = http.StatusBadRequest
	case errors.Is(err, registry.ErrConflict):
		code = http.StatusConflict
	case errors.Is(err, registry.ErrNotFound):
		code = http.StatusNotFound
	default:
		code = http.StatusInternalServerError
		s.log.Error("control request failed", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
	}
	if code < http.StatusInternalServerError && errors.As(err, &fe) {
		body.Error, body.Field = fe.Msg, fe.Field
	}
	writeJSON(w, code, body)
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

// decodeError turns an encoding/json error into one that fail maps.
func decodeError(err error) error {
	var (
		mbe *http.MaxBytesError
		se  *json.SyntaxError
		te  *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &mbe):
		return err
	case errors.Is(err, io.EOF):
		return &httpError{code: http.StatusBadRequest, msg: "empty body: want a JSON object"}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &httpError{code: http.StatusBadRequest, msg: "malformed JSON: unexpected end of body"}
	case errors.As(err, &se):
		return &httpError{code: http.StatusBadRequest, msg: fmt.Sprintf("malformed JSON at byte %d: %s", se.Offset, strings.TrimPrefix(se.Error(), "json: "))}
	case errors.As(err, &te):
		if te.Field == "" {
			return &httpError{code: http.StatusBadRequest, msg: fmt.Sprintf("body is a JSON %s: want a JSON object", te.Value)}
		}
		return registry.Invalid(te.Field, "JSON %s is not a %s", te.Value, jsonType(te.Type.Kind().String()))
	}
	// encoding/json has no type for unknown fields; its message is stable:
	// `json: unknown field "name"`.
	if rest, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		if name, uerr := strconv.Unquote(rest); uerr == nil {
			return registry.Invalid(name, "unknown field")
		}
	}
	return &httpError{code: http.StatusBadRequest, msg: "malformed JSON: " + strings.TrimPrefix(err.Error(), "json: ")}
}

// jsonType names a Go kind as the JSON type a client should send.
func jsonType(kind string) string {
	switch kind {
	case "int", "int64", "ptr":
		return "integer"
	case "string":
		return "string"
	case "struct":
		return "object"
	}
	return kind
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

func (s *server) register(w http.ResponseWriter, r *http.Request) error {
	var req RegisterRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	reg, err := s.registration(req)
	if err != nil {
		return err
	}
	b, err := s.reg.Register(reg)
	if err != nil {
		return err
	}
	state := ""
	for _, m := range b.Members {
		if m.Name == req.Name {
			state = string(m.State)
		}
	}
	s.log.Info("register", "name", req.Name, "binding", b.Key.String(), "backend", reg.Backend.String(), "state", state, "ttl", reg.TTL, "proxy_protocol", reg.ProxyProtocol.String(), "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, s.view(&b))
	return nil
}

// registration checks a register request and converts it.
func (s *server) registration(req RegisterRequest) (registry.Registration, error) {
	if err := registry.ValidateName(req.Name); err != nil {
		return registry.Registration{}, err
	}
	k, err := s.key(req.IP, req.Port, false)
	if err != nil {
		return registry.Registration{}, err
	}
	be, err := parseBackend(req.Backend)
	if err != nil {
		return registry.Registration{}, err
	}
	ttl, err := parseTTL(req.TTL)
	if err != nil {
		return registry.Registration{}, err
	}
	pp, err := registry.ParseProxyProtocol(req.ProxyProtocol)
	if err != nil {
		return registry.Registration{}, err
	}
	return registry.Registration{
		Name:          req.Name,
		IP:            k.IP,
		Port:          k.Port,
		Backend:       be,
		State:         registry.State(req.State),
		TTL:           ttl,
		ProxyProtocol: pp,
	}, nil
}

// registerBatch serves POST /v1/register/batch: every registration is
// checked and converted first, then applied in one change (all or
// nothing); an error names the registration's index in its field.
func (s *server) registerBatch(w http.ResponseWriter, r *http.Request) error {
	// Each registration is decoded on its own, so that a type error or an
	// unknown field names its index too.
	var req struct {
		Registrations []json.RawMessage `json:"registrations"`
	}
	if err := decodeMax(w, r, &req, MaxBatchBody); err != nil {
		return err
	}
	switch n := len(req.Registrations); {
	case req.Registrations == nil:
		return registry.Invalid("registrations", "missing: give a list of registrations, each as the body of %s", PathRegister)
	case n > MaxBatch:
		return registry.Invalid("registrations", "%d registrations is more than %d in one batch: split it", n, MaxBatch)
	}
	regs := make([]registry.Registration, len(req.Registrations))
	for i, raw := range req.Registrations {
		var rr RegisterRequest
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		err := dec.Decode(&rr)
		if err != nil {
			err = decodeError(err)
		} else {
			regs[i], err = s.registration(rr)
		}
		if err != nil {
			return batchError(i, err)
		}
	}
	bs, err := s.reg.RegisterBatch(regs)
	if err != nil {
		var be *registry.BatchError
		if errors.As(err, &be) {
			return batchError(be.Index, be.Err)
		}
		return err
	}
	// The bindings touched, once each, in the table's order.
	seen := make(map[registry.Key]bool, len(bs))
	views := make([]BindingView, 0, len(bs))
	slices.SortStableFunc(bs, func(a, b registry.Binding) int {
		if c := a.IP.Compare(b.IP); c != 0 {
			return c
		}
		return int(a.Port) - int(b.Port)
	})
	for i := range bs {
		if !seen[bs[i].Key] {
			seen[bs[i].Key] = true
			views = append(views, s.view(&bs[i]))
		}
	}
	s.log.Info("register batch", "registrations", len(regs), "bindings", len(views), "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, RegisterBatchResult{Registered: len(regs), Bindings: views})
	return nil
}

// batchError returns err of the registration at index i with its field
// named "registrations[i].FIELD", or "registrations[i]" when err names no
// field.
func batchError(i int, err error) error {
	var (
		fe *registry.FieldError
		he *httpError
	)
	switch {
	case errors.As(err, &fe):
		return &registry.FieldError{Field: fmt.Sprintf("registrations[%d].%s", i, fe.Field), Msg: fe.Msg, Kind: fe.Kind}
	case errors.As(err, &he) && he.code == http.StatusBadRequest:
		return registry.Invalid(fmt.Sprintf("registrations[%d]", i), "%s", he.msg)
	}
	return fmt.Errorf("registrations[%d]: %w", i, err)
}

// parseTTL parses a request's lease; empty means permanent (0). The
// registry checks the bounds.
func parseTTL(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, registry.Invalid("ttl", "%q is not a duration: use e.g. \"2s\" or \"1m30s\"", s)
	}
	if d <= 0 {
		return 0, registry.Invalid("ttl", "%q: must be positive (omit it for a permanent registration)", s)
	}
	return d, nil
}

func (s *server) renew(w http.ResponseWriter, r *http.Request) error {
	var req RenewRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := registry.ValidateName(req.Name); err != nil {
		return err
	}
	k, err := s.key(req.IP, req.Port, false)
	if err != nil {
		return err
	}
	b, err := s.reg.Renew(req.Name, k)
	if err != nil {
		return err
	}
	// Renewals come every few seconds from every leased member: debug only.
	s.log.Debug("renew", "name", req.Name, "binding", k.String(), "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, s.view(&b))
	return nil
}

func (s *server) deregister(w http.ResponseWriter, r *http.Request) error {
	var req DeregisterRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := registry.ValidateName(req.Name); err != nil {
		return err
	}
	k, err := s.key(req.IP, req.Port, false)
	if err != nil {
		return err
	}
	// For the log line only: what the member was just before.
	var before registry.Member
	if b, ok := s.reg.Table().Binding(k); ok {
		for _, m := range b.Members {
			if m.Name == req.Name {
				before = m
			}
		}
	}
	drain, err := parseDrain(req.Drain)
	if err != nil {
		return err
	}
	if err := s.reg.DeregisterDrain(req.Name, k, drain); err != nil {
		return err
	}
	s.log.Info("deregister", "name", req.Name, "binding", k.String(), "backend", before.Backend.String(), "state", string(before.State), "drain", drain, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, okBody{OK: true})
	return nil
}

func (s *server) debugVars(w http.ResponseWriter, r *http.Request) error {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	writeJSON(w, http.StatusOK, DebugVars{Goroutines: runtime.NumGoroutine(), HeapInuse: ms.HeapInuse, Sys: ms.Sys})
	return nil
}

// parseDrain parses a deregistration's drain; empty means none. The
// registry checks the range.
func parseDrain(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, registry.Invalid("drain", "%q is not a duration: use e.g. \"30s\" or \"5m\" (at most %v)", s, registry.MaxDrain)
	}
	return d, nil
}

func (s *server) switchTo(w http.ResponseWriter, r *http.Request) error {
	var req SwitchRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	k, err := s.key(req.IP, req.Port, true)
	if err != nil {
		return err
	}
	b, err := s.reg.Switch(k, req.To)
	if err != nil {
		return err
	}
	var backend string
	for _, m := range b.Members {
		if m.Name == req.To {
			backend = m.Backend.String()
		}
	}
	s.log.Info("switch", "name", req.To, "binding", k.String(), "backend", backend, "state", string(registry.Active), "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, s.view(&b))
	return nil
}

func (s *server) status(w http.ResponseWriter, r *http.Request) error {
	bs := s.reg.Table().Bindings()
	st := Status{Bindings: make([]BindingView, 0, len(bs))}
	if shared := s.sharedAddr(); shared.IsValid() {
		st.Shared = shared.String()
	}
	for _, b := range bs {
		st.Bindings = append(st.Bindings, s.view(b))
	}
	events := s.reg.Events()
	st.Events = make([]EventView, 0, len(events))
	for _, e := range events {
		st.Events = append(st.Events, EventView{Time: e.Time, Binding: e.Binding.String(), Member: e.Member, What: e.What, Why: e.Why, Cause: string(e.Cause)})
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

// sharedAddr is mode 2's common IP now; the zero Addr when none.
func (s *server) sharedAddr() netip.Addr {
	if s.sharedFunc != nil {
		return s.sharedFunc().Unmap()
	}
	return s.shared
}

// reloadConfig serves POST /v1/reload.
func (s *server) reloadConfig(w http.ResponseWriter, r *http.Request) error {
	// The request has no fields; an empty body is fine, as from
	// `curl -X POST`.
	if r.ContentLength != 0 {
		var req struct{}
		if err := decode(w, r, &req); err != nil {
			return err
		}
	}
	changed, err := s.reload(r.Context())
	if err != nil {
		return err
	}
	if changed == nil {
		changed = []string{}
	}
	// Reload logs the outcome itself, as it does for SIGHUP.
	writeJSON(w, http.StatusOK, ReloadResult{Changed: changed})
	return nil
}

func (s *server) health(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, okBody{OK: true})
	return nil
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
	srv := &http.Server{
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
