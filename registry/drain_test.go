package registry

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestDeregisterDrain(t *testing.T) {
	tests := []struct {
		name      string
		drain     time.Duration
		wantErr   error
		wantField string
	}{
		{name: "negative", drain: -time.Second, wantErr: ErrInvalid, wantField: "drain"},
		{name: "over an hour", drain: MaxDrain + time.Second, wantErr: ErrInvalid, wantField: "drain"},
		{name: "zero is a plain deregister", drain: 0},
		{name: "one hour", drain: MaxDrain},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := newRegistry(t, Registration{Name: "web-a", IP: ipA, Backend: beA})
			k := Key{IP: ipA}
			err := r.DeregisterDrain("web-a", k, tc.drain)
			if !checkErr(t, "DeregisterDrain", err, tc.wantErr, tc.wantField, "") {
				if _, _, ok := r.Lookup(ipA, 80); !ok {
					t.Errorf("Lookup(%s, 80) fails after a refused DeregisterDrain, want the member still there", ipA)
				}
				return
			}
			if _, _, ok := r.Lookup(ipA, 80); ok {
				t.Errorf("Lookup(%s, 80) ok after DeregisterDrain, want the member gone at once", ipA)
			}
			until, draining := r.Table().Draining(k, "web-a")
			_, held := r.Table().Addrs()[ipA]
			if want := tc.drain > 0; draining != want || held != want {
				t.Errorf("after DeregisterDrain(%v): Draining = %v, Addrs holds %s = %v; want both %v", tc.drain, draining, ipA, held, want)
			}
			if draining && !until.Equal(t0.Add(tc.drain)) {
				t.Errorf("Draining until %v, want %v", until, t0.Add(tc.drain))
			}
		})
	}
}

func TestEndDrains(t *testing.T) {
	r, clk := newRegistry(t,
		Registration{Name: "web-a", IP: ipA, Backend: beA},
		Registration{Name: "web-b", IP: ipB, Backend: beA},
	)
	ka, kb := Key{IP: ipA}, Key{IP: ipB}
	if err := r.DeregisterDrain("web-a", ka, 3*time.Second); err != nil {
		t.Fatalf("DeregisterDrain(web-a): %v", err)
	}
	if err := r.DeregisterDrain("web-b", kb, 10*time.Second); err != nil {
		t.Fatalf("DeregisterDrain(web-b): %v", err)
	}
	// A drain is not persisted: the state file has no bindings.
	data, err := json.Marshal(r.Table())
	if err != nil || strings.Contains(string(data), "web-a") {
		t.Errorf("MarshalJSON while draining = %s, %v; want no drained member", data, err)
	}
	if n := r.EndDrains(); n != 0 {
		t.Errorf("EndDrains at t0 = %d, want 0", n)
	}
	clk.Set(t0.Add(3 * time.Second))
	if n := r.EndDrains(); n != 1 {
		t.Errorf("EndDrains at t0+3s = %d, want 1", n)
	}
	if _, ok := r.Table().Addrs()[ipA]; ok {
		t.Errorf("Addrs still holds %s after its drain ended", ipA)
	}
	if _, ok := r.Table().Draining(kb, "web-b"); !ok {
		t.Errorf("web-b no longer draining at t0+3s, want until t0+10s")
	}
	// Registering again cancels the drain and routes new connections.
	mustRegister(t, r, Registration{Name: "web-b", IP: ipB, Backend: beA})
	if _, ok := r.Table().Draining(kb, "web-b"); ok {
		t.Errorf("web-b still draining after registering again")
	}
	if _, _, ok := r.Lookup(ipB, 80); !ok {
		t.Errorf("Lookup(%s, 80) fails after registering again", ipB)
	}
	clk.Set(t0.Add(time.Minute))
	if n := r.EndDrains(); n != 0 {
		t.Errorf("EndDrains after the cancelled drain's deadline = %d, want 0", n)
	}
}

// TestMembersLeft: only a change that takes a member away (deregister, an
// expired mode-1 lease, the end of a drain) reports members left; a
// renewal, a health report, a switch or a new member does not, nor does the
// start of a drain.
func TestMembersLeft(t *testing.T) {
	k80 := Key{IP: ipShared, Port: 80}
	tests := []struct {
		name   string
		change func(t *testing.T, r *Registry, clk *clock) error
		want   bool
	}{
		{"register another", func(t *testing.T, r *Registry, _ *clock) error {
			_, err := r.Register(Registration{Name: "web-c", IP: ipB, Backend: beA})
			return err
		}, false},
		{"renew", func(t *testing.T, r *Registry, _ *clock) error {
			_, err := r.Renew("web-a", Key{IP: ipA})
			return err
		}, false},
		{"switch", func(t *testing.T, r *Registry, _ *clock) error {
			_, err := r.Switch(k80, "web-b")
			return err
		}, false},
		{"health down", func(t *testing.T, r *Registry, _ *clock) error {
			return r.SetHealth(k80, "web-a", false, "health check failed")
		}, false},
		{"drain starts", func(t *testing.T, r *Registry, _ *clock) error {
			return r.DeregisterDrain("web-b", k80, time.Minute)
		}, false},
		{"deregister", func(t *testing.T, r *Registry, _ *clock) error {
			return r.Deregister("web-b", k80)
		}, true},
		{"mode-1 lease expires", func(t *testing.T, r *Registry, clk *clock) error {
			clk.Set(t0.Add(time.Hour))
			if n := r.Expire(); n != 1 {
				t.Fatalf("Expire() = %d, want 1", n)
			}
			return nil
		}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, clk := newRegistry(t,
				Registration{Name: "web-a", IP: ipA, Backend: beA, TTL: time.Minute},
				Registration{Name: "web-a", IP: ipShared, Port: 80, Backend: beA},
				Registration{Name: "web-b", IP: ipShared, Port: 80, Backend: beA},
			)
			prev := r.Table()
			if err := tc.change(t, r, clk); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if got := MembersLeft(prev, r.Table()); got != tc.want {
				t.Errorf("MembersLeft after %s = %v, want %v", tc.name, got, tc.want)
			}
		})
	}

	t.Run("drain ends", func(t *testing.T) {
		r, clk := newRegistry(t, Registration{Name: "web-a", IP: ipA, Backend: beA})
		if err := r.DeregisterDrain("web-a", Key{IP: ipA}, time.Second); err != nil {
			t.Fatalf("DeregisterDrain: %v", err)
		}
		prev := r.Table()
		clk.Set(t0.Add(2 * time.Second))
		if n := r.EndDrains(); n != 1 {
			t.Fatalf("EndDrains() = %d, want 1", n)
		}
		if !MembersLeft(prev, r.Table()) {
			t.Errorf("MembersLeft after the drain ended = false, want true")
		}
	})
}
