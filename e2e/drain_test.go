//go:build linux

package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestDrain (issue 5, connection draining): deregister --drain 3s refuses
// new connections at once, lets a long-lived stream keep flowing for about
// 3 s, then the gateway closes it.
func TestDrain(t *testing.T) {
	t.Parallel()
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a"}})
	tp.Start()
	tp.Register("web-a", "198.18.0.10", tp.Server("web-a").IP)

	for _, tc := range []struct{ name, drain string }{
		{"not a duration", "soon"},
		{"over an hour", "2h"},
		{"negative", "-1s"},
	} {
		r := tp.API("POST", "/v1/deregister", `{"name":"web-a","ip":"198.18.0.10","drain":"`+tc.drain+`"}`, "")
		if r.Code != 400 || r.Error.Field != "drain" {
			t.Errorf("deregister with drain %q (%s): HTTP %d field %q %s, want 400 field drain", tc.drain, tc.name, r.Code, r.Error.Field, r.Body)
		}
	}

	s := tp.startStream("198.18.0.10:7000", 5)
	if l := s.next(t, 10*time.Second); !strings.Contains(l, "connected") {
		t.Fatalf("tcpclient stream: first line %q, want connected", l)
	}
	start := time.Now()
	tp.MustCLI("deregister", "--name", "web-a", "--ip", "198.18.0.10", "--drain", "3s")

	if r := tp.Dial("198.18.0.10:8080", 3*time.Second); r.OK || r.MS > 1000 {
		t.Errorf("dial while draining = ok=%v %q after %d ms, want refused within 1 s", r.OK, r.Err, r.MS)
	}
	mark := func() int64 {
		t.Helper()
		s.stdin.Write([]byte("mark\n"))
		var m struct {
			Event string `json:"event"`
			Sent  int64  `json:"sent"`
		}
		if l := s.next(t, 5*time.Second); json.Unmarshal([]byte(l), &m) != nil || m.Event != "mark" {
			t.Fatalf("tcpclient stream: line %q, want a mark (stream ended %v after deregister --drain 3s)", l, time.Since(start))
		}
		return m.Sent
	}
	time.Sleep(time.Until(start.Add(1500 * time.Millisecond)))
	m1 := mark()
	time.Sleep(time.Until(start.Add(2500 * time.Millisecond)))
	m2 := mark()
	if m2 <= m1 {
		t.Errorf("stream while draining: %d bytes sent at 1.5 s, %d at 2.5 s: nothing flowed", m1, m2)
	}
	var final Transfer
	l := s.next(t, 10*time.Second)
	ended := time.Since(start)
	if err := json.Unmarshal([]byte(l), &final); err != nil {
		t.Fatalf("tcpclient stream: final line %q: %v", l, err)
	}
	if final.Err == "" || ended < 2500*time.Millisecond || ended > 6*time.Second {
		t.Errorf("stream after deregister --drain 3s: ended after %v with err %q, want closed by the gateway after about 3 s", ended, final.Err)
	}
	t.Logf("drain 3s: %d bytes at 1.5 s, %d at 2.5 s; closed after %v: %s", m1, m2, ended.Round(time.Millisecond), final.Err)
	if st := tp.Status(); len(st.Bindings) != 0 {
		t.Errorf("status after the drain = %v, want empty", st.Summary())
	}
}
