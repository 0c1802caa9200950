package registry

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// memberState is what the maintenance tests compare of a member.
type memberState struct {
	State State
	Down  bool
	Cause DownCause
}

func states(t *testing.T, r *Registry, k Key) map[string]memberState {
	t.Helper()
	b, ok := r.Table().Binding(k)
	if !ok {
		t.Fatalf("no binding %s", k)
	}
	out := map[string]memberState{}
	for _, m := range b.Members {
		out[m.Name] = memberState{m.State, m.Down, m.DownCause}
	}
	return out
}

func TestSetMaint(t *testing.T) {
	const port = 8080
	k2 := Key{IP: ipA, Port: port}
	k1 := Key{IP: ipB}
	setup := []Registration{
		{Name: "web-a", IP: ipA, Port: port, Backend: beA, State: Active},
		{Name: "web-b", IP: ipA, Port: port, Backend: beB, State: Standby},
		{Name: "web-a", IP: ipB, Backend: beA},
	}
	type step struct {
		do        func(r *Registry) error
		wantErr   error
		wantField string
		// want are the members of k2 and k1 afterwards, and whom Lookup
		// returns (empty: nobody).
		want2, want1   map[string]memberState
		serve2, serve1 string
	}
	up := func(s State) memberState { return memberState{State: s} }
	maint := func(s State) memberState { return memberState{State: s, Down: true, Cause: DownMaint} }
	maintOf := func(name string, port uint16, on bool) func(r *Registry) error {
		return func(r *Registry) error { _, err := r.SetMaint(name, port, on); return err }
	}
	tests := []struct {
		name     string
		failback bool
		steps    []step
	}{
		{
			name: "active hands over, stays standby when ready",
			steps: []step{
				{do: maintOf("web-a", 0, true),
					want2: map[string]memberState{"web-a": maint(Standby), "web-b": up(Active)}, serve2: "web-b",
					want1: map[string]memberState{"web-a": maint(Active)}},
				{do: maintOf("web-a", 0, true),
					want2: map[string]memberState{"web-a": maint(Standby), "web-b": up(Active)}, serve2: "web-b",
					want1: map[string]memberState{"web-a": maint(Active)}},
				{do: func(r *Registry) error { return r.SetHealth(k2, "web-a", true, "probe ok") },
					want2: map[string]memberState{"web-a": maint(Standby), "web-b": up(Active)}, serve2: "web-b",
					want1: map[string]memberState{"web-a": maint(Active)}},
				{do: func(r *Registry) error { _, err := r.Register(setup[2]); return err },
					want2: map[string]memberState{"web-a": maint(Standby), "web-b": up(Active)}, serve2: "web-b",
					want1: map[string]memberState{"web-a": maint(Active)}},
				{do: maintOf("web-a", 0, false),
					want2: map[string]memberState{"web-a": up(Standby), "web-b": up(Active)}, serve2: "web-b",
					want1: map[string]memberState{"web-a": up(Active)}, serve1: "web-a"},
			},
		},
		{
			name:     "failback on ready",
			failback: true,
			steps: []step{
				{do: maintOf("web-a", 0, true),
					want2: map[string]memberState{"web-a": maint(Standby), "web-b": up(Active)}, serve2: "web-b",
					want1: map[string]memberState{"web-a": maint(Active)}},
				{do: maintOf("web-a", 0, false),
					want2: map[string]memberState{"web-a": up(Active), "web-b": up(Standby)}, serve2: "web-a",
					want1: map[string]memberState{"web-a": up(Active)}, serve1: "web-a"},
			},
		},
		{
			name: "port filter, standby in maintenance is not promoted",
			steps: []step{
				{do: maintOf("web-b", port, true),
					want2: map[string]memberState{"web-a": up(Active), "web-b": maint(Standby)}, serve2: "web-a",
					want1: map[string]memberState{"web-a": up(Active)}, serve1: "web-a"},
				{do: maintOf("web-a", port, true),
					want2: map[string]memberState{"web-a": maint(Active), "web-b": maint(Standby)},
					want1: map[string]memberState{"web-a": up(Active)}, serve1: "web-a"},
				{do: maintOf("web-b", 0, false),
					want2: map[string]memberState{"web-a": maint(Standby), "web-b": up(Active)}, serve2: "web-b",
					want1: map[string]memberState{"web-a": up(Active)}, serve1: "web-a"},
			},
		},
		{
			name: "bad input changes nothing",
			steps: []step{
				{do: maintOf("nobody", 0, true), wantErr: ErrNotFound, wantField: "name",
					want2: map[string]memberState{"web-a": up(Active), "web-b": up(Standby)}, serve2: "web-a",
					want1: map[string]memberState{"web-a": up(Active)}, serve1: "web-a"},
				{do: maintOf("web-b", 9999, true), wantErr: ErrNotFound, wantField: "port",
					want2: map[string]memberState{"web-a": up(Active), "web-b": up(Standby)}, serve2: "web-a",
					want1: map[string]memberState{"web-a": up(Active)}, serve1: "web-a"},
				{do: maintOf("bad name!", 0, true), wantErr: ErrInvalid, wantField: "name",
					want2: map[string]memberState{"web-a": up(Active), "web-b": up(Standby)}, serve2: "web-a",
					want1: map[string]memberState{"web-a": up(Active)}, serve1: "web-a"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := newRegistry(t, setup...)
			r.SetFailback(tc.failback)
			for i, s := range tc.steps {
				checkErr(t, "step", s.do(r), s.wantErr, s.wantField, "")
				if diff := cmp.Diff(s.want2, states(t, r, k2)); diff != "" {
					t.Errorf("step %d: members of %s (-want +got):\n%s", i, k2, diff)
				}
				if diff := cmp.Diff(s.want1, states(t, r, k1)); diff != "" {
					t.Errorf("step %d: members of %s (-want +got):\n%s", i, k1, diff)
				}
				for _, c := range []struct {
					k    Key
					want string
				}{{k2, s.serve2}, {k1, s.serve1}} {
					m, _, ok := r.Lookup(c.k.IP, port)
					if got := map[bool]string{true: m.Name}[ok]; got != c.want {
						t.Errorf("step %d: Lookup(%s, %d) = %q, want %q", i, c.k.IP, port, got, c.want)
					}
				}
			}
		})
	}
}
