package health

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vipmux/vipmux/registry"
)

// TestUpdate: a checker that probes hourly does not notice a dead active;
// once Update shortens the interval it fails over, without a restart.
func TestUpdate(t *testing.T) {
	a, b := newServer(t), newServer(t)
	r := newRegistry(t, false)
	register(t, r, "web-a", 8080, a.addr, registry.Active)
	register(t, r, "web-b", 8080, b.addr, registry.Standby)
	c := run(t, Options{Registry: r, Defaults: Settings{Interval: time.Hour, Timeout: fast.Timeout, Rise: 2, Fall: 2}})

	time.Sleep(50 * time.Millisecond) // the first probes pass
	a.Close()
	stays(t, "web-a serving (probed hourly)", 200*time.Millisecond, func() bool { return serving(r, 8080) == "web-a" })

	if err := c.Update(fast, nil); err != nil {
		t.Fatalf("Update(%+v): %v", fast, err)
	}
	if diff := cmp.Diff(fast, c.Settings(8080)); diff != "" {
		t.Errorf("Settings(8080) after Update (-want +got):\n%s", diff)
	}
	waitFor(t, "failover on 8080 after Update", func() bool { return serving(r, 8080) == "web-b" })
}

// TestUpdateInvalid: bad settings are refused and the old ones stay.
func TestUpdateInvalid(t *testing.T) {
	r := newRegistry(t, false)
	c := run(t, Options{Registry: r, Defaults: fast})
	bad := map[uint16]Settings{8080: {Rise: MaxCount + 1}}
	err := c.Update(Settings{Interval: time.Millisecond}, bad)
	if err == nil || !strings.Contains(err.Error(), "interval 1ms") || !strings.Contains(err.Error(), "rise 101") {
		t.Errorf("Update(bad) = %v, want errors naming the interval and port 8080's rise", err)
	}
	if err := Check(Settings{Interval: time.Millisecond}, nil); err == nil {
		t.Errorf("Check(interval 1ms) = nil, want an error")
	}
	if diff := cmp.Diff(fast, c.Settings(8080)); diff != "" {
		t.Errorf("Settings(8080) after a refused Update (-want +got):\n%s", diff)
	}
}

// TestRelease: members that health checks marked down come up again when
// checks are turned off; one whose lease ran out does not.
func TestRelease(t *testing.T) {
	a, b := newServer(t), newServer(t)
	now := time.Now()
	r, err := registry.New(registry.Options{Now: func() time.Time { return now }, AllowLoopbackBackends: true})
	if err != nil {
		t.Fatalf("registry.New: %v", err)
	}
	k := registry.Key{IP: sharedIP, Port: 8080}
	register(t, r, "web-a", 8080, a.addr, registry.Active)
	if _, err := r.Register(registry.Registration{Name: "web-b", IP: sharedIP, Port: 8080, Backend: b.addr, State: registry.Standby, TTL: registry.MinTTL}); err != nil {
		t.Fatalf("Register(web-b, leased): %v", err)
	}
	if err := r.SetHealth(k, "web-a", false, ReasonFailedPrefix+"refused"); err != nil {
		t.Fatal(err)
	}
	now = now.Add(registry.MinTTL)
	if n := r.Expire(); n != 1 {
		t.Fatalf("Expire() = %d, want 1 (web-b's lease)", n)
	}
	n, err := Release(r)
	if err != nil || n != 1 {
		t.Fatalf("Release() = %d, %v; want 1, nil", n, err)
	}
	// web-a is up again, and the only healthy member: failover makes it
	// active.
	if m := member(t, r, 8080, "web-a"); m.Down || m.State != registry.Active {
		t.Errorf("web-a after Release: down=%v state=%s, want up and active", m.Down, m.State)
	}
	if m := member(t, r, 8080, "web-b"); !m.Down || m.DownCause != registry.DownLease {
		t.Errorf("web-b (lease expired) after Release: down=%v cause=%q, want still down by its lease", m.Down, m.DownCause)
	}
}
