package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"testing"

	"github.com/vipmux/vipmux/registry"
)

// dadError stands for another package's error type (stack's duplicate
// address): a conflict by its Is method, naming its field by FieldNamer.
type dadError struct{ ip netip.Addr }

func (e *dadError) Error() string {
	return fmt.Sprintf("%s is already in use on the front link", e.ip)
}
func (e *dadError) Field() string        { return "ip" }
func (e *dadError) Is(target error) bool { return target == registry.ErrConflict }

// refusalError stands for a refused reload of another package: its kind
// is a field of the type, and its text starts with the key.
type refusalError struct {
	key, msg string
	kind     error
}

func (e *refusalError) Error() string        { return e.key + ": " + e.msg }
func (e *refusalError) Field() string        { return e.key }
func (e *refusalError) Is(target error) bool { return target == e.kind }

// kindOnly is a conflict that names no field.
type kindOnly struct{}

func (kindOnly) Error() string        { return "the gateway is shutting down" }
func (kindOnly) Is(target error) bool { return target == registry.ErrConflict }

// fieldOnly names a field but matches no sentinel: an internal error.
type fieldOnly struct{}

func (fieldOnly) Error() string { return "state.file: disk full" }
func (fieldOnly) Field() string { return "state.file" }

// TestErrorStatus: every kind of error, of the registry or of another
// package, wrapped or not, gets its status and names its field, through
// the one mapping (fail).
func TestErrorStatus(t *testing.T) {
	ip := netip.MustParseAddr("198.18.0.10")
	tests := []struct {
		name      string
		err       error
		wantCode  int
		wantField string
		wantMsg   string
	}{
		{
			name:     "registry invalid",
			err:      registry.Invalid("health.rise", "0 is out of range"),
			wantCode: 400, wantField: "health.rise", wantMsg: "0 is out of range",
		},
		{
			name:     "registry conflict, wrapped",
			err:      fmt.Errorf("reload: %w", &registry.FieldError{Field: "nic.interface", Kind: registry.ErrConflict, Msg: "cannot change"}),
			wantCode: 409, wantField: "nic.interface", wantMsg: "cannot change",
		},
		{
			name:     "registry not found, wrapped sentinel",
			err:      fmt.Errorf("switch: %w", registry.ErrNotFound),
			wantCode: 404, wantMsg: "switch: not found",
		},
		{
			name:     "another package's conflict naming its field",
			err:      fmt.Errorf("prepare: %w", &dadError{ip: ip}),
			wantCode: 409, wantField: "ip", wantMsg: "198.18.0.10 is already in use on the front link",
		},
		{
			name:     "another package's refusal, text led by its key",
			err:      &refusalError{key: "health.timeout", msg: `line 9: want a duration string such as "100ms"`, kind: registry.ErrInvalid},
			wantCode: 400, wantField: "health.timeout", wantMsg: `line 9: want a duration string such as "100ms"`,
		},
		{
			name:     "another package's conflict refusal",
			err:      &refusalError{key: "nic.interface", msg: "cannot change while running", kind: registry.ErrConflict},
			wantCode: 409, wantField: "nic.interface", wantMsg: "cannot change while running",
		},
		{
			name: "joined refusals name the first",
			err: errors.Join(
				&refusalError{key: "health.rise", msg: "0 is out of range", kind: registry.ErrInvalid},
				&refusalError{key: "health.fall", msg: "0 is out of range", kind: registry.ErrInvalid},
			),
			wantCode: 400, wantField: "health.rise", wantMsg: "0 is out of range",
		},
		{
			name:     "kind without a field",
			err:      fmt.Errorf("reload: %w", kindOnly{}),
			wantCode: 409, wantMsg: "reload: the gateway is shutting down",
		},
		{
			name:     "field without a kind is internal",
			err:      fieldOnly{},
			wantCode: 500, wantMsg: "state.file: disk full",
		},
		{
			name:     "plain error is internal",
			err:      errors.New("read config: permission denied"),
			wantCode: 500, wantMsg: "read config: permission denied",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := testHandler(t, func(o *Options) {
				o.Reload = func(context.Context) ([]string, error) { return nil, tc.err }
			})
			rec := do(h, http.MethodPost, PathReload, "", "")
			if rec.Code != tc.wantCode {
				t.Fatalf("POST %s with error %v = %d %s, want %d", PathReload, tc.err, rec.Code, rec.Body, tc.wantCode)
			}
			checkErrorBody(t, rec, tc.wantField)
			var eb errorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil {
				t.Fatalf("error body %q: %v", rec.Body, err)
			}
			if eb.Error != tc.wantMsg {
				t.Errorf("error message = %q, want %q", eb.Error, tc.wantMsg)
			}
		})
	}
}

// conflictApplier refuses a change that adds its address, as stack's
// duplicate address detection does for an address in use on the link.
type conflictApplier struct{ inUse netip.Addr }

func (a conflictApplier) Prepare(prev, next *registry.Table) error {
	if next.Holds(a.inUse) && !prev.Holds(a.inUse) {
		return &dadError{ip: a.inUse}
	}
	return nil
}

func (conflictApplier) Commit(prev, next *registry.Table) {}

// TestApplierErrorStatus: an applier's own error type, returned through
// the registry, is a 409 naming its field, for one registration and in a
// batch.
func TestApplierErrorStatus(t *testing.T) {
	tests := []struct {
		name, path, body string
	}{
		{name: "register", path: PathRegister, body: `{"name":"web-c","ip":"198.18.0.20","backend":"198.19.0.4"}`},
		{name: "batch", path: PathRegisterBatch, body: `{"registrations":[{"name":"web-c","ip":"198.18.0.20","backend":"198.19.0.4"}]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, reg := testHandler(t, nil)
			if err := reg.SetApplier(conflictApplier{inUse: netip.MustParseAddr("198.18.0.20")}); err != nil {
				t.Fatalf("SetApplier: %v", err)
			}
			rec := do(h, http.MethodPost, tc.path, tc.body, "")
			if rec.Code != http.StatusConflict {
				t.Fatalf("POST %s = %d %s, want 409", tc.path, rec.Code, rec.Body)
			}
			checkErrorBody(t, rec, "ip")
		})
	}
}

// TestBatchErrorField: an error of a batch's registration names its index
// and keeps its kind, whichever package's type it is.
func TestBatchErrorField(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		wantKind  error
		wantField string
	}{
		{name: "registry field error", err: registry.Invalid("ttl", "too short"), wantKind: registry.ErrInvalid, wantField: "registrations[2].ttl"},
		{name: "another package's, wrapped", err: fmt.Errorf("prepare: %w", &dadError{ip: netip.MustParseAddr("198.18.0.10")}), wantKind: registry.ErrConflict, wantField: "registrations[2].ip"},
		{name: "kind without a field", err: kindOnly{}, wantKind: registry.ErrConflict},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := batchError(2, tc.err)
			if !errors.Is(err, tc.wantKind) {
				t.Errorf("batchError(2, %v) = %v, want errors.Is %v", tc.err, err, tc.wantKind)
			}
			field, _, _ := fieldOf(err)
			if field != tc.wantField {
				t.Errorf("batchError(2, %v) names field %q, want %q", tc.err, field, tc.wantField)
			}
		})
	}
}
