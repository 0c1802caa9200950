package registry

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestCauses walks one mode-2 binding through every kind of change and
// checks the typed causes that each leaves on the members and the events.
func TestCauses(t *testing.T) {
	const ttl = 10 * time.Second
	type causes struct {
		Down  DownCause
		Cause ChangeCause
	}
	clk := &clock{t: t0}
	r, err := New(Options{Networks: front, Now: clk.Now, Failback: true})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name      string
		at        time.Time
		do        func() error
		want      map[string]causes
		wantEvent []ChangeCause // causes of the events that the step recorded
	}{
		{
			name: "register",
			do: func() error {
				_, err := r.RegisterBatch([]Registration{
					{Name: "web-a", IP: ipShared, Port: 80, Backend: be80A, TTL: ttl},
					{Name: "web-b", IP: ipShared, Port: 80, Backend: be80B},
				})
				return err
			},
			want: map[string]causes{"web-a": {Cause: CauseRegister}, "web-b": {Cause: CauseRegister}},
		},
		{
			name: "switch",
			do:   func() error { _, err := r.Switch(k80, "web-b"); return err },
			want: map[string]causes{"web-a": {Cause: CauseSwitch}, "web-b": {Cause: CauseSwitch}},
		},
		{
			name: "switch back",
			do:   func() error { _, err := r.Switch(k80, "web-a"); return err },
			want: map[string]causes{"web-a": {Cause: CauseSwitch}, "web-b": {Cause: CauseSwitch}},
		},
		{
			name:      "health check fails: failover",
			at:        t0.Add(time.Second),
			do:        func() error { return r.SetHealth(k80, "web-a", false, "health check failed: refused") },
			want:      map[string]causes{"web-a": {Down: DownHealth, Cause: CauseFailover}, "web-b": {Cause: CauseFailover}},
			wantEvent: []ChangeCause{CauseHealth, CauseFailover, CauseFailover},
		},
		{
			name:      "health check passes: failback",
			at:        t0.Add(2 * time.Second),
			do:        func() error { return r.SetHealth(k80, "web-a", true, "health check passed") },
			want:      map[string]causes{"web-a": {Cause: CauseFailback}, "web-b": {Cause: CauseFailback}},
			wantEvent: []ChangeCause{CauseHealth, CauseFailback},
		},
		{
			name:      "lease runs out: failover",
			at:        t0.Add(ttl),
			do:        func() error { r.Expire(); return nil },
			want:      map[string]causes{"web-a": {Down: DownLease, Cause: CauseFailover}, "web-b": {Cause: CauseFailover}},
			wantEvent: []ChangeCause{CauseExpiry, CauseFailover, CauseFailover},
		},
		{
			name: "health report up leaves the lease's down",
			do:   func() error { return r.SetHealth(k80, "web-a", true, "health check passed") },
			want: map[string]causes{"web-a": {Down: DownLease, Cause: CauseFailover}, "web-b": {Cause: CauseFailover}},
		},
		{
			name: "health report down leaves the lease's down",
			do:   func() error { return r.SetHealth(k80, "web-a", false, "health check failed: refused") },
			want: map[string]causes{"web-a": {Down: DownLease, Cause: CauseFailover}, "web-b": {Cause: CauseFailover}},
		},
		{
			name:      "renew",
			at:        t0.Add(ttl + time.Second),
			do:        func() error { _, err := r.Renew("web-a", k80); return err },
			want:      map[string]causes{"web-a": {Cause: CauseRenew}, "web-b": {Cause: CauseFailover}},
			wantEvent: []ChangeCause{CauseRenew},
		},
	}
	for _, st := range steps {
		if !st.at.IsZero() {
			clk.Set(st.at)
		}
		before := len(r.Events())
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		b, ok := r.Table().Binding(k80)
		if !ok {
			t.Fatalf("%s: no binding %s", st.name, k80)
		}
		got := map[string]causes{}
		for _, m := range b.Members {
			got[m.Name] = causes{Down: m.DownCause, Cause: m.Cause}
			if m.Down != (m.DownCause != DownNone) {
				t.Errorf("%s: %s has Down %v and DownCause %q", st.name, m.Name, m.Down, m.DownCause)
			}
		}
		if diff := cmp.Diff(st.want, got); diff != "" {
			t.Errorf("%s: causes (-want +got):\n%s", st.name, diff)
		}
		var gotEvents []ChangeCause
		for _, e := range r.Events()[before:] {
			gotEvents = append(gotEvents, e.Cause)
		}
		if diff := cmp.Diff(st.wantEvent, gotEvents); diff != "" {
			t.Errorf("%s: event causes (-want +got):\n%s", st.name, diff)
		}
	}
}

// TestRestoreDownCause: a state file from before DownCause existed
// restores its down members with the cause that their Reason names, so
// that a member whose lease had expired is not brought up by a health
// check after the upgrade.
func TestRestoreDownCause(t *testing.T) {
	old := `{"version":1,"bindings":[{"ip":"198.18.0.100","port":80,"members":[
		{"name":"web-a","backend":"198.19.0.2:80","state":"standby","since":"2026-01-02T03:04:05Z","ttl":10000000000,"down":true,"failed_over":true,"reason":"lease expired"},
		{"name":"web-b","backend":"198.19.0.3:80","state":"active","since":"2026-01-02T03:04:05Z","reason":"automatic failover: web-a lease expired"},
		{"name":"web-c","backend":"198.19.0.4:80","state":"standby","since":"2026-01-02T03:04:05Z","down":true,"reason":"health check failed: connection refused"}]}]}`
	tbl, err := DecodeTable([]byte(old))
	if err != nil {
		t.Fatalf("DecodeTable: %v", err)
	}
	r, err := New(Options{Networks: front, Now: func() time.Time { return t1 }, Store: &fakeStore{t: tbl}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	b, _ := r.Table().Binding(k80)
	got := map[string]DownCause{}
	for _, m := range b.Members {
		got[m.Name] = m.DownCause
	}
	want := map[string]DownCause{"web-a": DownLease, "web-b": DownNone, "web-c": DownHealth}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("restored down causes (-want +got):\n%s", diff)
	}
	// The lease's down survives a passing health check; the health
	// check's does not.
	for _, name := range []string{"web-a", "web-c"} {
		if err := r.SetHealth(k80, name, true, "health check passed"); err != nil {
			t.Fatalf("SetHealth(%s up): %v", name, err)
		}
	}
	b, _ = r.Table().Binding(k80)
	for _, m := range b.Members {
		if wantDown := m.Name == "web-a"; m.Down != wantDown {
			t.Errorf("%s after a passing health check: down=%v, want %v", m.Name, m.Down, wantDown)
		}
	}
}

// TestRestoreUnknownDownCause: a state file with a down cause that this
// version does not know is refused, not restored with a member that
// nothing could bring up.
func TestRestoreUnknownDownCause(t *testing.T) {
	data := `{"version":1,"bindings":[{"ip":"198.18.0.100","port":80,"members":[
		{"name":"web-a","backend":"198.19.0.2:80","state":"active","since":"2026-01-02T03:04:05Z","down":true,"down_cause":"manual"}]}]}`
	tbl, err := DecodeTable([]byte(data))
	if err != nil {
		t.Fatalf("DecodeTable: %v", err)
	}
	_, err = New(Options{Networks: front, Store: &fakeStore{t: tbl}})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "down_cause") {
		t.Errorf("New with down_cause \"manual\" = %v, want an ErrInvalid naming down_cause", err)
	}
}
