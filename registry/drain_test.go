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
