package control

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/vipmux/vipmux/registry"
)

func TestTableChanges(t *testing.T) {
	k := registry.Key{IP: testShared, Port: 80}
	tests := []struct {
		name   string
		change func(*registry.Registry) error
		want   []ChangeView
	}{
		{
			name: "register",
			change: func(r *registry.Registry) error {
				_, err := r.Register(registry.Registration{Name: "web-c", IP: testShared, Port: 80, Backend: netip.MustParseAddrPort("198.19.0.4:80"), State: registry.Standby})
				return err
			},
			want: []ChangeView{{Binding: "198.18.0.100:80", Member: "web-c", What: "registered", State: "standby", Why: "registered", Cause: "register"}},
		},
		{
			name:   "switch",
			change: func(r *registry.Registry) error { _, err := r.Switch(k, "web-b"); return err },
			want: []ChangeView{
				{Binding: "198.18.0.100:80", Member: "web-a", What: "standby", State: "standby", Why: "switch to web-b", Cause: "switch"},
				{Binding: "198.18.0.100:80", Member: "web-b", What: "active", State: "active", Why: "switch", Cause: "switch"},
			},
		},
		{
			name: "standby down",
			change: func(r *registry.Registry) error {
				return r.SetHealth(k, "web-b", false, "health check failed: refused")
			},
			want: []ChangeView{
				{Binding: "198.18.0.100:80", Member: "web-b", What: "down", State: "standby", Down: true, Why: "health check failed: refused", Cause: "health"},
			},
		},
		{
			name: "deregister the mode-1 binding",
			change: func(r *registry.Registry) error {
				return r.Deregister("web-a", registry.Key{IP: netip.MustParseAddr("198.18.0.10")})
			},
			want: []ChangeView{{Binding: "198.18.0.10:*", Member: "web-a", What: "removed"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := testRegistry(t)
			prev := r.Table()
			if err := tc.change(r); err != nil {
				t.Fatalf("change: %v", err)
			}
			got := tableChanges(prev, r.Table(), testNow)
			if diff := cmp.Diff(tc.want, got, cmpopts.IgnoreFields(ChangeView{}, "Time")); diff != "" {
				t.Errorf("tableChanges (-want +got):\n%s", diff)
			}
		})
	}
}

// TestEventsFollow follows GET /v1/events through the client while the
// table changes, then stops the server: the stream ends and Serve
// returns nil (the stream does not hold up the shutdown).
func TestEventsFollow(t *testing.T) {
	h, reg := testHandler(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, ln, h) }()
	defer cancel()

	c := &Client{BaseURL: "http://" + ln.Addr().String()}
	got := make(chan ChangeView, 16)
	followed := make(chan error, 1)
	go func() {
		followed <- c.Events(context.Background(), func(cv ChangeView) error { got <- cv; return nil })
	}()
	// The follower is subscribed once the handler has it.
	f := h.(*server).feed
	for {
		f.mu.Lock()
		n := len(f.subs)
		f.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := reg.Switch(registry.Key{IP: testShared, Port: 80}, "web-b"); err != nil {
		t.Fatalf("Switch: %v", err)
	}
	var whats []string
	for range 2 {
		cv := <-got
		whats = append(whats, cv.Member+" "+cv.What)
	}
	if want := []string{"web-a standby", "web-b active"}; !cmp.Equal(whats, want) {
		t.Errorf("events after a switch = %q, want %q", whats, want)
	}

	cancel()
	if err := <-served; err != nil {
		t.Errorf("Serve with a follower = %v, want nil", err)
	}
	if err := <-followed; err == nil || !strings.Contains(err.Error(), "ended the stream") {
		t.Errorf("Events after the server stopped = %v, want the stream ended", err)
	}
}

// TestEventsNeedsToken checks that the stream is behind the token, and
// that the client reports the 401.
func TestEventsNeedsToken(t *testing.T) {
	h, _ := testHandler(t, func(o *Options) { o.Token = "s3cret-token" })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, ln, h) }()
	defer func() { cancel(); <-served }()
	c := &Client{BaseURL: "http://" + ln.Addr().String()}
	err = c.Events(context.Background(), func(ChangeView) error { return nil })
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Code != http.StatusUnauthorized {
		t.Errorf("Events without the token = %v, want a 401 APIError", err)
	}
}

func TestStatusSummaryDraining(t *testing.T) {
	h, reg := testHandler(t, nil)
	if err := reg.DeregisterDrain("web-b", registry.Key{IP: testShared, Port: 80}, time.Minute); err != nil {
		t.Fatalf("DeregisterDrain: %v", err)
	}
	rec := do(h, http.MethodGet, PathStatus, "", "")
	if !strings.Contains(rec.Body.String(), `"summary":{"bindings":2,"members":2,"down":0,"draining":1,"held_ips":2}`) {
		t.Errorf("GET %s after a drain = %s, want a summary with 2 bindings, 2 members, 1 draining, 2 held IPs", PathStatus, rec.Body.String())
	}
}
