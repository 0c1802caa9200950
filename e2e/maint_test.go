//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// maintStatus is what TestMaint reads of `vipmux status --json`: every
// member as "ip:port name=state[/down_cause]".
func (tp *Topology) maintStatus() []string {
	tp.t.Helper()
	var st struct {
		Bindings []struct {
			IP      string `json:"ip"`
			Port    int    `json:"port"`
			Members []struct {
				Name      string `json:"name"`
				State     string `json:"state"`
				DownCause string `json:"down_cause"`
			} `json:"members"`
		} `json:"bindings"`
	}
	out := tp.MustCLI("status", "--json")
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		tp.t.Fatalf("vipmux status --json: %v\n%s", err, out)
	}
	var got []string
	for _, b := range st.Bindings {
		for _, m := range b.Members {
			s := fmt.Sprintf("%s:%d %s=%s", b.IP, b.Port, m.Name, m.State)
			if m.DownCause != "" {
				s += "/" + m.DownCause
			}
			got = append(got, s)
		}
	}
	return got
}

// TestMaint (issue 15 point 8): vipmux maint keeps a server registered and
// visible, takes it out of new connections, lets an established one go
// on, and hands an active's port to the healthy standby; vipmux ready
// brings it back.
func TestMaint(t *testing.T) {
	t.Parallel()
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a", "web-b"}, Extra: sharedConfig})
	tp.Start()
	const ip1 = "198.18.0.10"
	tp.Register("web-a", ip1, tp.Server("web-a").IP) // mode 1
	for _, port := range []int{8080, 7000} {
		tp.RegisterPort("web-a", port, "active")
		tp.RegisterPort("web-b", port, "standby")
	}
	url := "http://" + sharedIP + ":8080/"
	tp.requireAll(url, 10, "web-a", "before maint")

	// Bad input: refused before anything changes, naming the flag.
	for _, args := range [][]string{
		{"maint"},
		{"maint", "--name", "web-z"},
		{"maint", "--name", "web-a", "--port", "9"},
		{"maint", "--name", "web-a", "--port", "70000"},
	} {
		if _, errOut, code := tp.CLI(nil, args...); code == 0 || errOut == "" {
			t.Errorf("vipmux %s: exit %d, stderr %q; want non-zero with a reason", strings.Join(args, " "), code, errOut)
		}
	}

	// An established connection to web-a on port 7000.
	s := tp.startStream(sharedIP+":7000", 7)
	if l := s.next(t, 10*time.Second); !strings.Contains(l, "connected") {
		t.Fatalf("tcpclient stream: first line %q, want connected", l)
	}
	mark := func() int64 {
		t.Helper()
		s.stdin.Write([]byte("mark\n"))
		var m struct {
			Event string `json:"event"`
			Sent  int64  `json:"sent"`
		}
		if l := s.next(t, 5*time.Second); json.Unmarshal([]byte(l), &m) != nil || m.Event != "mark" {
			t.Fatalf("tcpclient stream: line %q, want a mark: the established connection did not survive maint", l)
		}
		return m.Sent
	}
	m0 := mark()

	out := tp.MustCLI("maint", "--name", "web-a")
	if !strings.Contains(out, "web-a") {
		t.Errorf("vipmux maint --name web-a printed %q, want the bindings of web-a", out)
	}
	want := []string{
		ip1 + ":0 web-a=active/maint",
		sharedIP + ":7000 web-a=standby/maint", sharedIP + ":7000 web-b=active",
		sharedIP + ":8080 web-a=standby/maint", sharedIP + ":8080 web-b=active",
	}
	if got := tp.maintStatus(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("status after maint:\n got %q\nwant %q", got, want)
	}
	// New connections: the standby on the shared IP, none on mode 1's IP
	// (it is still held: it answers, with a RST).
	tp.requireAll(url, 20, "web-b", "after maint --name web-a")
	if r := tp.Dial(ip1+":8080", 3*time.Second); r.OK {
		t.Errorf("dial %s:8080 while web-a is in maintenance succeeded, want refused", ip1)
	}
	tp.requireARPAnswer(ip1)
	// The established one goes on.
	time.Sleep(300 * time.Millisecond)
	if m1 := mark(); m1 <= m0 {
		t.Errorf("stream to web-a: %d bytes before maint, %d after: nothing flowed", m0, m1)
	}

	// A registration again does not end maintenance.
	tp.Register("web-a", ip1, tp.Server("web-a").IP)
	if r := tp.Dial(ip1+":8080", 3*time.Second); r.OK {
		t.Errorf("dial %s:8080 after web-a registered again in maintenance succeeded, want refused", ip1)
	}

	tp.MustCLI("ready", "--name", "web-a", "--port", "8080")
	want = []string{
		ip1 + ":0 web-a=active/maint",
		sharedIP + ":7000 web-a=standby/maint", sharedIP + ":7000 web-b=active",
		sharedIP + ":8080 web-a=standby", sharedIP + ":8080 web-b=active",
	}
	if got := tp.maintStatus(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("status after ready --port 8080:\n got %q\nwant %q", got, want)
	}
	tp.MustCLI("ready", "--name", "web-a")
	if got := tp.Get("http://" + ip1 + ":8080/"); got != "web-a" {
		t.Errorf("GET http://%s:8080/ after ready = %q, want web-a", ip1, got)
	}
	// Without failback, web-b keeps the port until a switch.
	tp.requireAll(url, 10, "web-b", "after ready (no failback)")
	tp.MustCLI("switch", "--port", "8080", "--to", "web-a")
	tp.requireAll(url, 10, "web-a", "after switch back to web-a")
}
