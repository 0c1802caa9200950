package control

import (
	"context"
	"net/http"

	"github.com/vipmux/vipmux/registry"
)

// PathMaint answers POST MaintRequest by putting a member in maintenance
// or taking it out, in every binding it belongs to (or those of one
// port), with MaintResult.
const PathMaint = "/v1/maint"

// Member states that MaintRequest.State accepts, as HAProxy's `set server
// state` names them.
const (
	// StateMaint: in maintenance. The member stays registered and visible
	// (down, down_cause "maint"), takes no new connection and keeps its
	// established ones; an active hands its port to the first healthy
	// standby.
	StateMaint = "maint"
	// StateReady: out of maintenance, up again.
	StateReady = "ready"
)

// MaintRequest is the body of POST /v1/maint.
type MaintRequest struct {
	// Name is the member.
	Name string `json:"name"`
	// Port, when set, limits the change to the member's bindings of that
	// port (on any IP); absent: every binding of the member.
	Port *int `json:"port,omitempty"`
	// State is StateMaint or StateReady.
	State string `json:"state"`
}

// MaintResult is the answer of POST /v1/maint: the member's bindings
// that the request concerns, as they now stand.
type MaintResult struct {
	Bindings []BindingView `json:"bindings"`
}

// Maint puts a member in maintenance or takes it out (POST /v1/maint).
func (c *Client) Maint(ctx context.Context, req MaintRequest) (MaintResult, error) {
	var res MaintResult
	err := c.do(ctx, http.MethodPost, PathMaint, req, &res)
	return res, err
}

// maint serves PathMaint.
func (s *server) maint(w http.ResponseWriter, r *http.Request) error {
	var req MaintRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	var on bool
	switch req.State {
	case StateMaint:
		on = true
	case StateReady:
	case "":
		return registry.Invalid("state", "missing: give %q or %q", StateMaint, StateReady)
	default:
		return registry.Invalid("state", "%q: give %q or %q", req.State, StateMaint, StateReady)
	}
	var port uint16
	if req.Port != nil {
		if *req.Port < 1 || *req.Port > 65535 {
			return registry.Invalid("port", "%d is out of range 1..65535", *req.Port)
		}
		port = uint16(*req.Port)
	}
	bs, err := s.reg.SetMaint(req.Name, port, on)
	if err != nil {
		return err
	}
	res := MaintResult{Bindings: make([]BindingView, 0, len(bs))}
	for i := range bs {
		res.Bindings = append(res.Bindings, s.view(&bs[i]))
	}
	s.log.Info("member state", "name", req.Name, "state", req.State, "port", int(port), "bindings", len(bs), "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, res)
	return nil
}
