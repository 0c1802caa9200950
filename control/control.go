// Package control is vipmux's control plane: the HTTP/JSON API over the
// registry, and the Go client that the CLI uses to call it.
//
// It owns the wire format (the request and response types below), request
// decoding and validation, bearer-token authentication, and the one mapping
// of registry errors to HTTP status codes. It does not own the table (package
// registry) nor the connections (package dispatch), which it only reads
// through the small Conns interface.
//
// Serving the API:
//
//	h, err := control.NewHandler(control.Options{
//		Registry: reg,
//		Shared:   netip.MustParseAddr("198.18.0.100"),
//		Token:    token,
//		Conns:    disp,
//		Logger:   logger,
//	})
//	if err != nil { ... }
//	ln, err := net.Listen("tcp", "198.19.0.1:7070")
//	err = control.Serve(ctx, ln, h) // returns nil after ctx is done
//
// Calling it:
//
//	c := &control.Client{BaseURL: "http://198.19.0.1:7070", Token: token}
//	port := 80
//	b, err := c.Register(ctx, control.RegisterRequest{
//		Name: "web-a", Port: &port, Backend: "198.19.0.2:80", State: "active",
//	})
//	var apiErr *control.APIError
//	if errors.As(err, &apiErr) && apiErr.Code == http.StatusConflict { ... }
package control

import "time"

// API paths.
const (
	PathRegister = "/v1/register"
	// PathRegisterBatch answers POST RegisterBatchRequest with
	// RegisterBatchResult: many registrations as one change.
	PathRegisterBatch = "/v1/register/batch"
	PathDeregister    = "/v1/deregister"
	PathSwitch        = "/v1/switch"
	PathRenew         = "/v1/renew"
	PathStatus        = "/v1/status"
	PathHealth        = "/healthz"
	// PathDebugVars answers GET with DebugVars; it needs the token.
	PathDebugVars = "/debug/vars"
	// PathReload answers POST (empty body or {}) by re-reading the
	// gateway's config file, with ReloadResult; it needs the token.
	PathReload = "/v1/reload"
	// PathMetrics answers GET with the Prometheus metrics when the server
	// has them (Options.Metrics); it needs the token.
	PathMetrics = "/metrics"
)

// MaxRequestBody is the largest request body the server reads; a larger one
// is answered with 413 Request Entity Too Large.
const MaxRequestBody = 64 << 10

// RegisterRequest is the body of POST /v1/register.
type RegisterRequest struct {
	// Name is the server computer's name: 1 to 63 characters from
	// [A-Za-z0-9._-], starting with a letter or digit.
	Name string `json:"name"`
	// IP is the front address of the binding. It may be empty when Port is
	// set; it then means the gateway's shared address ([shared] address).
	IP string `json:"ip,omitempty"`
	// Port is the binding's port, 1 to 65535 (mode 2). Nil means every port
	// of IP (mode 1), and IP is then required.
	Port *int `json:"port,omitempty"`
	// Backend is "HOST" or "HOST:PORT" where HOST is an IP literal (IPv6 in
	// brackets when a port follows). Without a port, connections go to the
	// port that the client dialled.
	Backend string `json:"backend"`
	// State is "active" or "standby"; empty means active if the binding has
	// no active member yet, standby otherwise.
	State string `json:"state,omitempty"`
	// TTL is the lease as a Go duration ("2s", "1m30s"), 100ms to 24h: the
	// member must be renewed (POST /v1/renew) before it runs out, or it is
	// removed (mode 1) or marked down (mode 2). Empty means permanent.
	TTL string `json:"ttl,omitempty"`
	// ProxyProtocol is "v1" or "v2": the gateway then writes a PROXY
	// protocol header of that version as the first bytes of each of the
	// member's backend connections, carrying the client's address and port
	// and the front address and port that the client dialled. Empty or
	// "none" sends no header. Registering again replaces the setting.
	ProxyProtocol string `json:"proxy_protocol,omitempty"`
}

// Batch limits.
const (
	// MaxBatch is the most registrations that one batch may hold.
	MaxBatch = 100000
	// MaxBatchBody is the largest body of POST /v1/register/batch.
	MaxBatchBody = 32 << 20
)

// RegisterBatchRequest is the body of POST /v1/register/batch: many
// registrations applied in order as one change, all or nothing, made
// durable by one write. The answer to a batch with a bad registration is
// the error of the first one (400, 404 or 409 like POST /v1/register),
// with Field "registrations[INDEX].FIELD" (INDEX from 0), and nothing of
// the batch is applied.
type RegisterBatchRequest struct {
	// Registrations are at most MaxBatch registrations, each as the body
	// of POST /v1/register.
	Registrations []RegisterRequest `json:"registrations"`
}

// RegisterBatchResult is the answer to POST /v1/register/batch.
type RegisterBatchResult struct {
	// Registered is the number of registrations applied.
	Registered int `json:"registered"`
	// Bindings are the bindings that the batch touched, as they stand
	// after it, ordered by IP, then port.
	Bindings []BindingView `json:"bindings"`
}

// RenewRequest is the body of POST /v1/renew: extend the lease of member
// Name in the binding (IP, Port) by its TTL. IP and Port follow the rules
// of RegisterRequest.
type RenewRequest struct {
	// Name is the member whose lease is renewed.
	Name string `json:"name"`
	// IP is the binding's address; empty with Port set means the shared
	// address.
	IP string `json:"ip,omitempty"`
	// Port is the binding's port; nil means every port (mode 1).
	Port *int `json:"port,omitempty"`
}

// DeregisterRequest is the body of POST /v1/deregister. IP and Port follow
// the rules of RegisterRequest.
type DeregisterRequest struct {
	// Name is the member to remove.
	Name string `json:"name"`
	// IP is the binding's address; empty with Port set means the shared
	// address.
	IP string `json:"ip,omitempty"`
	// Port is the binding's port; nil means every port (mode 1).
	Port *int `json:"port,omitempty"`
	// Drain, a Go duration up to "1h", lets the member's established
	// connections run for that long before the gateway closes them; new
	// connections are refused at once either way. Empty or "0s" closes them
	// at once.
	Drain string `json:"drain,omitempty"`
}

// SwitchRequest is the body of POST /v1/switch: make To the active member of
// the binding (IP, Port); the former active member becomes a standby.
type SwitchRequest struct {
	// IP is the binding's address; empty means the shared address.
	IP string `json:"ip,omitempty"`
	// Port is the binding's port, 1 to 65535; required.
	Port *int `json:"port,omitempty"`
	// To is the member that becomes active.
	To string `json:"to"`
	// Force switches even to a member known to be down (refused with 409
	// otherwise): the member is marked up until its next health check.
	Force bool `json:"force,omitempty"`
}

// BindingView is a binding as the API shows it.
type BindingView struct {
	// IP is the binding's front address.
	IP string `json:"ip"`
	// Port is the binding's port; 0 means every port (mode 1).
	Port int `json:"port"`
	// Members are the binding's members in registration order.
	Members []MemberView `json:"members"`
	// Holder is, in a cluster of gateways (docs/cluster.md), the gateway
	// that holds IP (answers for it); "none" while no gateway does.
	// Absent for a gateway alone. Shown by GET /v1/status only.
	Holder string `json:"holder,omitempty"`
}

// MemberView is a member of a binding as the API shows it.
type MemberView struct {
	// Name is the server computer's name.
	Name string `json:"name"`
	// Backend is "IP" when connections go to the client's port, else
	// "IP:PORT" (IPv6 in brackets).
	Backend string `json:"backend"`
	// State is "active" or "standby".
	State string `json:"state"`
	// Since is when the member entered State (RFC 3339).
	Since time.Time `json:"since"`
	// Connections is the number of live proxied connections to the member,
	// or 0 when the gateway does not count them.
	Connections int64 `json:"connections"`
	// TTL is the member's lease as a Go duration; empty when permanent.
	TTL string `json:"ttl,omitempty"`
	// Expires is when the lease runs out unless renewed; absent when
	// permanent.
	Expires time.Time `json:"expires,omitzero"`
	// Down is true when the member's health check or its lease declared
	// it gone; a down member receives no new connections.
	Down bool `json:"down"`
	// DownCause says what marked the member down: "health" (its health
	// check) or "lease" (its lease ran out); absent while it is up.
	DownCause string `json:"down_cause,omitempty"`
	// FailedOver is true for a former active that automatic failover
	// demoted.
	FailedOver bool `json:"failed_over,omitempty"`
	// Reason says why State or Down last changed, e.g. "registered",
	// "switch", "health check failed: ...", "automatic failover: ...".
	Reason string `json:"reason,omitempty"`
	// Cause is what last changed State or Down, for programs: "register",
	// "switch", "health", "expiry", "renew", "failover" or "failback".
	Cause string `json:"cause,omitempty"`
	// ProxyProtocol is "v1" or "v2" when the gateway sends the member's
	// backend a PROXY protocol header; absent when it sends none.
	ProxyProtocol string `json:"proxy_protocol,omitempty"`
}

// EventView is one automatic change of the table (a health check or lease
// that marked a member down or up, a failover) as the API shows it.
type EventView struct {
	// Time is when it happened.
	Time time.Time `json:"time"`
	// Binding is "IP:PORT", or "IP:*" for every port.
	Binding string `json:"binding"`
	// Member is the server computer concerned.
	Member string `json:"member"`
	// What happened: "down", "up", "expired", "removed", "promoted" or
	// "demoted".
	What string `json:"what"`
	// Why it happened, for people.
	Why string `json:"why"`
	// Cause is what made it happen, for programs: "health", "expiry",
	// "renew", "failover" or "failback".
	Cause string `json:"cause,omitempty"`
}

// Status is the body of the answer to GET /v1/status.
type Status struct {
	// Shared is the shared address of mode 2; empty when not configured.
	Shared string `json:"shared,omitempty"`
	// Bindings are every binding, ordered by IP, then port.
	Bindings []BindingView `json:"bindings"`
	// Events are the most recent automatic changes, oldest first.
	Events []EventView `json:"events"`
	// Summary counts the whole table.
	Summary Summary `json:"summary"`
}

// Summary counts the table, for the first line of status.
type Summary struct {
	// Bindings and Members are the bindings and the members in them.
	Bindings int `json:"bindings"`
	Members  int `json:"members"`
	// Down are the members marked down (health check, lease).
	Down int `json:"down"`
	// Draining are the members deregistered with a drain whose
	// connections are still open.
	Draining int `json:"draining"`
	// HeldIPs are the front addresses the gateway holds: the bindings'
	// and the shared address.
	HeldIPs int `json:"held_ips"`
}

// ReloadResult is the body of the answer to POST /v1/reload.
type ReloadResult struct {
	// Changed are the config keys whose new values took effect, sorted;
	// empty when the file did not change anything.
	Changed []string `json:"changed"`
}

// errorBody is the body of every error answer.
type errorBody struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}

// okBody is the body of answers that carry no data.
type okBody struct {
	OK bool `json:"ok"`
}

// DebugVars is the body of GET /debug/vars: the gateway process's own
// figures, for leak checks and for an operator's first look.
type DebugVars struct {
	// Goroutines is runtime.NumGoroutine(): two per proxied connection
	// plus a fixed base.
	Goroutines int `json:"goroutines"`
	// HeapInuse and Sys are runtime.MemStats' HeapInuse and Sys, in bytes.
	HeapInuse uint64 `json:"heap_inuse"`
	Sys       uint64 `json:"sys"`
}
