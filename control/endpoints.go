package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"time"

	"github.com/vipmux/vipmux/registry"
)

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
	m, _ := b.Member(req.Name)
	state := string(m.State)
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
	var he *httpError
	field, msg, named := fieldOf(err)
	kind := kindOf(err)
	switch {
	case named && kind != nil:
		return &registry.FieldError{Field: fmt.Sprintf("registrations[%d].%s", i, field), Msg: msg, Kind: kind}
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
		before, _ = b.Member(req.Name)
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
	switchTo := s.reg.Switch
	if req.Force {
		switchTo = s.reg.SwitchForce
	}
	b, err := switchTo(k, req.To)
	if err != nil {
		return err
	}
	to, _ := b.Member(req.To)
	s.log.Info("switch", "name", req.To, "binding", k.String(), "backend", to.Backend.String(), "state", string(registry.Active), "remote", r.RemoteAddr, "force", req.Force)
	writeJSON(w, http.StatusOK, s.view(&b))
	return nil
}

func (s *server) status(w http.ResponseWriter, r *http.Request) error {
	t := s.reg.Table()
	bs := t.Bindings()
	st := Status{Bindings: make([]BindingView, 0, len(bs))}
	addrs := t.Addrs()
	st.Summary = Summary{Bindings: len(bs), Draining: len(t.Drains()), HeldIPs: len(addrs)}
	if shared := s.sharedAddr(); shared.IsValid() {
		st.Shared = shared.String()
		if _, ok := addrs[shared]; !ok {
			st.Summary.HeldIPs++
		}
	}
	for _, b := range bs {
		v := s.view(b)
		v.Holder = s.holderOf(v.IP)
		st.Bindings = append(st.Bindings, v)
		st.Summary.Members += len(b.Members)
		for _, m := range b.Members {
			if m.Down {
				st.Summary.Down++
			}
		}
	}
	events := s.reg.Events()
	st.Events = make([]EventView, 0, len(events))
	for _, e := range events {
		st.Events = append(st.Events, EventView{Time: e.Time, Binding: e.Binding.String(), Member: e.Member, What: e.What, Why: e.Why, Cause: string(e.Cause)})
	}
	writeJSON(w, http.StatusOK, st)
	return nil
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
	if s.healthFn != nil {
		if err := s.healthFn(); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: err.Error()})
			return nil
		}
	}
	writeJSON(w, http.StatusOK, okBody{OK: true})
	return nil
}
