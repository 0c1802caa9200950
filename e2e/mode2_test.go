//go:build linux

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Mode 2 acceptance (issue 4): one shared IP, per-port active/standby
// server computers and the switch command. Every test runs once per front
// NIC driver.

const sharedIP = "198.18.0.100"

var sharedConfig = fmt.Sprintf("[shared]\naddress = %q", sharedIP)

// GetN sends n sequential requests, each on a new connection, and counts
// the answers by server name ("ERR ..." lines count as errors).
func (tp *Topology) GetN(url string, n int) map[string]int {
	tp.t.Helper()
	out, errOut, _ := tp.Client(time.Duration(n)*6*time.Second+10*time.Second, "get", "-n", fmt.Sprint(n), url)
	if !strings.Contains(errOut, "slow_over_500ms=0") {
		tp.t.Logf("tcpclient get -n %d %s: %s", n, url, strings.TrimSpace(errOut))
	}
	got := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(line, "ERR ") {
			line = "ERR"
		}
		got[line]++
	}
	return got
}

// requireAll fails the test unless all n requests to url reach want.
func (tp *Topology) requireAll(url string, n int, want, when string) {
	tp.t.Helper()
	if got := tp.GetN(url, n); got[want] != n {
		tp.t.Errorf("%s: %d requests to %s answered by %v, want all by %s", when, n, url, got, want)
	}
}

// RegisterPort registers name for port on the shared IP (mode 2); state ""
// leaves the default to the gateway.
func (tp *Topology) RegisterPort(name string, port int, state string) {
	tp.t.Helper()
	args := []string{"register", "--name", name, "--port", fmt.Sprint(port), "--backend", fmt.Sprintf("%s:%d", tp.Server(name).IP, port)}
	if state != "" {
		args = append(args, "--state", state)
	}
	tp.MustCLI(args...)
}

// States returns the members' states of binding (ip, port) from status.
func (tp *Topology) States(ip string, port int) map[string]string {
	tp.t.Helper()
	got := map[string]string{}
	for _, b := range tp.Status().Bindings {
		if b.IP == ip && b.Port == port {
			for _, m := range b.Members {
				got[m.Name] = m.State
			}
		}
	}
	return got
}

func (tp *Topology) requireStates(ip string, port int, want map[string]string, when string) {
	tp.t.Helper()
	got := tp.States(ip, port)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		tp.t.Errorf("%s: status of %s:%d = %v, want %v", when, ip, port, got, want)
	}
}

// TestSharedActiveStandby is issue 4 acceptance 1 and 2: every request to
// the shared IP reaches the active server; after switch returns, every new
// request reaches the new active.
func TestSharedActiveStandby(t *testing.T) {
	t.Parallel()
	forEachDriver(t, func(t *testing.T, driver string) {
		tp := NewTopology(t, Options{Driver: driver, Servers: []string{"web-a", "web-b"}, Extra: sharedConfig})
		tp.Start()
		tp.RegisterPort("web-a", 8080, "active")
		tp.RegisterPort("web-b", 8080, "standby")
		url := "http://" + sharedIP + ":8080/"

		tp.requireAll(url, 100, "web-a", "web-a active, web-b standby")
		tp.requireStates(sharedIP, 8080, map[string]string{"web-a": "active", "web-b": "standby"}, "before switch")

		tp.MustCLI("switch", "--port", "8080", "--to", "web-b")
		tp.requireAll(url, 100, "web-b", "right after switch --to web-b")
		tp.requireStates(sharedIP, 8080, map[string]string{"web-a": "standby", "web-b": "active"}, "after switch")

		// Switching to the current active is a no-op that succeeds.
		tp.MustCLI("switch", "--port", "8080", "--to", "web-b")
		tp.requireAll(url, 10, "web-b", "after switching to the current active")
		tp.requireARPAnswer(sharedIP)
	})
}

// streamProc is a running `tcpclient stream`.
type streamProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

// startStream starts `tcpclient stream -seed SEED [args] addr`.
func (tp *Topology) startStream(addr string, seed int, args ...string) *streamProc {
	tp.t.Helper()
	argv := append([]string{"netns", "exec", tp.ClientNS, tcpclientBin, "stream", "-seed", fmt.Sprint(seed)}, args...)
	cmd := exec.Command("ip", append(argv, addr)...)
	cmd.Env = cleanEnv(nil)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tp.t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tp.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tp.t.Fatalf("start tcpclient stream: %v", err)
	}
	s := &streamProc{cmd: cmd, stdin: stdin, lines: make(chan string, 16)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		close(s.lines)
	}()
	tp.t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	return s
}

// next returns the next output line, failing the test after timeout.
func (s *streamProc) next(t testing.TB, timeout time.Duration) string {
	t.Helper()
	select {
	case l, ok := <-s.lines:
		if !ok {
			t.Fatalf("tcpclient stream exited early")
		}
		return l
	case <-time.After(timeout):
		t.Fatalf("tcpclient stream: no output within %v", timeout)
	}
	return ""
}

// TestSwitchKeepsEstablished is issue 4 acceptance 3: a stream opened to
// web-a before the switch keeps flowing, byte-exact, until the client
// closes it after the switch, while new connections go to web-b.
func TestSwitchKeepsEstablished(t *testing.T) {
	t.Parallel()
	forEachDriver(t, func(t *testing.T, driver string) {
		tp := NewTopology(t, Options{Driver: driver, Servers: []string{"web-a", "web-b"}, Extra: sharedConfig})
		tp.Start()
		tp.RegisterPort("web-a", 7000, "active")
		tp.RegisterPort("web-b", 7000, "standby")
		addr := sharedIP + ":7000"

		s := tp.startStream(addr, 21)
		if l := s.next(t, 15*time.Second); !strings.Contains(l, "connected") {
			t.Fatalf("tcpclient stream: first line %q, want connected", l)
		}
		time.Sleep(500 * time.Millisecond)
		tp.MustCLI("switch", "--port", "7000", "--to", "web-b")

		// A new connection goes to web-b.
		var r Transfer
		tp.ClientJSON(30*time.Second, &r, "halfclose", "-n", "1000", "-seed", "22", addr)
		if want := "web-b got 1000 bytes sha256=" + patternSum(22, 1000); r.Reply != want {
			t.Errorf("new connection after switch: reply %q err %q, want %q", r.Reply, r.Err, want)
		}

		// status counts the stream on web-a, the member it was accepted for.
		for _, b := range tp.Status().Bindings {
			for _, m := range b.Members {
				if b.Port == 7000 && m.Name == "web-a" && m.Connections < 1 {
					t.Errorf("status during the stream: web-a on %s:7000 has %d connections, want at least 1", b.IP, m.Connections)
				}
			}
		}

		// The old stream still flows: bytes sent after the mark still arrive.
		fmt.Fprintln(s.stdin, "mark")
		var mark struct {
			Sent int64 `json:"sent"`
		}
		if l := s.next(t, 10*time.Second); json.Unmarshal([]byte(l), &mark) != nil {
			t.Fatalf("tcpclient stream: mark line %q", l)
		}
		time.Sleep(time.Second)
		s.stdin.Close()
		var final Transfer
		l := s.next(t, 30*time.Second)
		if err := json.Unmarshal([]byte(l), &final); err != nil {
			t.Fatalf("tcpclient stream: final line %q: %v", l, err)
		}
		want := fmt.Sprintf("web-a got %d bytes sha256=%s", final.Bytes, final.SHA256)
		if final.Err != "" || final.Reply != want {
			t.Errorf("stream opened before switch: reply %q err %q, want %q", final.Reply, final.Err, want)
		}
		if final.Bytes <= mark.Sent {
			t.Errorf("stream: %d bytes sent in all, %d at the mark after switch: nothing flowed after the switch", final.Bytes, mark.Sent)
		}
		t.Logf("stream: %d bytes before the mark, %d in all", mark.Sent, final.Bytes)
	})
}

// TestThreeServersSwitch is issue 4 acceptance 4: one active and two
// standbys; switching to each in turn, every request follows the active.
// Deregistering the active leaves the port answering RST.
func TestThreeServersSwitch(t *testing.T) {
	t.Parallel()
	forEachDriver(t, func(t *testing.T, driver string) {
		tp := NewTopology(t, Options{Driver: driver, Servers: []string{"web-a", "web-b", "web-c"}, Extra: sharedConfig})
		tp.Start()
		// No --state: the first becomes active, later ones standby.
		tp.RegisterPort("web-a", 8080, "")
		tp.RegisterPort("web-b", 8080, "")
		tp.RegisterPort("web-c", 8080, "standby")
		tp.requireStates(sharedIP, 8080, map[string]string{"web-a": "active", "web-b": "standby", "web-c": "standby"}, "after registering without --state")
		url := "http://" + sharedIP + ":8080/"
		tp.requireAll(url, 20, "web-a", "initially")
		for _, to := range []string{"web-b", "web-c", "web-a", "web-c"} {
			tp.MustCLI("switch", "--port", "8080", "--to", to)
			tp.requireAll(url, 20, to, "after switch --to "+to)
			want := map[string]string{"web-a": "standby", "web-b": "standby", "web-c": "standby"}
			want[to] = "active"
			tp.requireStates(sharedIP, 8080, want, "after switch --to "+to)
		}

		tp.MustCLI("deregister", "--name", "web-c", "--port", "8080")
		tp.requireStates(sharedIP, 8080, map[string]string{"web-a": "standby", "web-b": "standby"}, "after deregistering the active")
		if r := tp.Dial(sharedIP+":8080", 5*time.Second); r.OK || !strings.Contains(r.Err, "connection refused") {
			t.Errorf("port without an active member: dial = ok=%v %q, want connection refused", r.OK, r.Err)
		}
		tp.MustCLI("switch", "--port", "8080", "--to", "web-b")
		tp.requireAll(url, 10, "web-b", "after switch --to web-b with no active before")
	})
}

// TestTwoPorts is issue 4 acceptance 5: two ports on the shared IP with
// different actives route independently; an unregistered port answers RST.
func TestTwoPorts(t *testing.T) {
	t.Parallel()
	forEachDriver(t, func(t *testing.T, driver string) {
		tp := NewTopology(t, Options{Driver: driver, Servers: []string{"web-a", "web-b"}, Extra: sharedConfig})
		tp.Start()
		tp.RegisterPort("web-a", 8080, "active")
		tp.RegisterPort("web-b", 8080, "standby")
		tp.RegisterPort("web-b", 9090, "active")
		tp.RegisterPort("web-a", 9090, "standby")
		u8080, u9090 := "http://"+sharedIP+":8080/", "http://"+sharedIP+":9090/"
		tp.requireAll(u8080, 20, "web-a", "8080 → web-a")
		tp.requireAll(u9090, 20, "web-b", "9090 → web-b")
		r := tp.Dial(sharedIP+":7000", 5*time.Second)
		if r.OK || !strings.Contains(r.Err, "connection refused") || r.MS >= 1000 {
			t.Errorf("dial unregistered port %s:7000 = ok=%v %q after %d ms, want connection refused at once", sharedIP, r.OK, r.Err, r.MS)
		}
		tp.MustCLI("switch", "--port", "8080", "--to", "web-b")
		tp.requireAll(u8080, 20, "web-b", "after switching 8080 to web-b")
		tp.requireAll(u9090, 20, "web-b", "9090 after switching 8080")
		tp.MustCLI("switch", "--port", "9090", "--to", "web-a")
		tp.requireAll(u9090, 20, "web-a", "after switching 9090 to web-a")
		tp.requireAll(u8080, 20, "web-b", "8080 after switching 9090")
	})
}

// TestMode1AndMode2 is issue 4 acceptance 6: a mode 1 IP and the shared IP
// work side by side in one gateway, and a port binding on an IP wins over
// that IP's every-port binding.
func TestMode1AndMode2(t *testing.T) {
	t.Parallel()
	forEachDriver(t, func(t *testing.T, driver string) {
		tp := NewTopology(t, Options{Driver: driver, Servers: []string{"web-a", "web-b", "web-c"}, Extra: sharedConfig})
		tp.Start()
		tp.Register("web-c", "198.18.0.10", tp.Server("web-c").IP)
		tp.RegisterPort("web-a", 8080, "active")
		tp.RegisterPort("web-b", 8080, "standby")

		tp.requireAll("http://198.18.0.10:8080/", 10, "web-c", "mode 1 IP")
		tp.requireAll("http://198.18.0.10:9090/", 10, "web-c", "mode 1 IP, another port")
		tp.requireAll("http://"+sharedIP+":8080/", 10, "web-a", "shared IP")
		tp.MustCLI("switch", "--port", "8080", "--to", "web-b")
		tp.requireAll("http://"+sharedIP+":8080/", 10, "web-b", "shared IP after switch")
		tp.requireAll("http://198.18.0.10:8080/", 10, "web-c", "mode 1 IP after the switch")
		tp.requireARPAnswer("198.18.0.10")
		tp.requireARPAnswer(sharedIP)

		t.Run("port on another gateway-held IP", func(t *testing.T) {
			// --ip with --port binds a port on an IP other than the shared one.
			tp := tp.With(t)
			tp.MustCLI("register", "--name", "web-b", "--ip", "198.18.0.20", "--port", "8080", "--backend", tp.Server("web-b").IP+":8080")
			tp.requireAll("http://198.18.0.20:8080/", 10, "web-b", "198.18.0.20:8080 bound to web-b")
			if r := tp.Dial("198.18.0.20:9090", 5*time.Second); r.OK || !strings.Contains(r.Err, "connection refused") {
				t.Errorf("dial 198.18.0.20:9090 (no binding on that port) = ok=%v %q, want connection refused", r.OK, r.Err)
			}
			tp.requireARPAnswer("198.18.0.20")
		})
		t.Run("port binding wins over every-port binding", func(t *testing.T) {
			tp := tp.With(t)
			tp.MustCLI("register", "--name", "web-a", "--ip", "198.18.0.10", "--port", "9090", "--backend", tp.Server("web-a").IP+":9090")
			tp.requireAll("http://198.18.0.10:9090/", 10, "web-a", "198.18.0.10:9090 with a port binding to web-a")
			tp.requireAll("http://198.18.0.10:8080/", 10, "web-c", "198.18.0.10:8080 (every-port binding)")
		})
	})
}

// TestSharedARPAtStartup is issue 4 acceptance 7: the shared IP is answered
// in ARP from start-up, before any server registers.
func TestSharedARPAtStartup(t *testing.T) {
	t.Parallel()
	forEachDriver(t, func(t *testing.T, driver string) {
		tp := NewTopology(t, Options{Driver: driver, Servers: []string{"web-a"}, Extra: sharedConfig})
		tp.Start()
		if st := tp.Status(); st.Shared != sharedIP || len(st.Bindings) != 0 {
			t.Errorf("status at start-up: shared %q, %d bindings; want shared %s and no bindings", st.Shared, len(st.Bindings), sharedIP)
		}
		r := tp.Dial(sharedIP+":8080", 5*time.Second)
		if r.OK || !strings.Contains(r.Err, "connection refused") {
			t.Errorf("dial %s:8080 before any registration = ok=%v %q after %d ms, want connection refused (ARP answered, no binding)", sharedIP, r.OK, r.Err, r.MS)
		}
		tp.requireARPAnswer(sharedIP)

		// The shared IP stays held when its last port member leaves.
		tp.RegisterPort("web-a", 8080, "active")
		tp.requireAll("http://"+sharedIP+":8080/", 5, "web-a", "registered")
		tp.MustCLI("deregister", "--name", "web-a", "--port", "8080")
		tp.FlushNeigh()
		r = tp.Dial(sharedIP+":8080", 5*time.Second)
		if r.OK || !strings.Contains(r.Err, "connection refused") {
			t.Errorf("dial %s:8080 after its last member left = ok=%v %q after %d ms, want connection refused (still answered in ARP)", sharedIP, r.OK, r.Err, r.MS)
		}
		tp.requireARPAnswer(sharedIP)
	})
}

// TestMode2BadInput is issue 4 acceptance 8: each mistake gets its HTTP
// code, a clear CLI error and a non-zero exit, and changes nothing.
func TestMode2BadInput(t *testing.T) {
	t.Parallel()
	forEachDriver(t, func(t *testing.T, driver string) {
		tp := NewTopology(t, Options{Driver: driver, Servers: []string{"web-a", "web-b"}, Extra: sharedConfig})
		tp.Start()
		tp.RegisterPort("web-a", 8080, "active")
		tp.RegisterPort("web-b", 8080, "standby")
		before := tp.Status().Summary()

		tests := []struct {
			name     string
			path     string
			body     string
			cli      []string
			wantCode int
			wantText string // must appear in the API error (error or field) and the CLI output
		}{
			{"switch to a non-member", "/v1/switch", `{"port":8080,"to":"web-z"}`,
				[]string{"switch", "--port", "8080", "--to", "web-z"}, 404, "web-z"},
			{"switch on an unregistered port", "/v1/switch", `{"port":9999,"to":"web-a"}`,
				[]string{"switch", "--port", "9999", "--to", "web-a"}, 404, ""},
			{"register port 0", "/v1/register", `{"name":"web-b","port":0,"backend":"198.19.0.3:8080"}`,
				[]string{"register", "--name", "web-b", "--port", "0", "--backend", "198.19.0.3:8080"}, 400, "port"},
			{"register port 65536", "/v1/register", `{"name":"web-b","port":65536,"backend":"198.19.0.3:8080"}`,
				[]string{"register", "--name", "web-b", "--port", "65536", "--backend", "198.19.0.3:8080"}, 400, "port"},
			{"switch port 0", "/v1/switch", `{"port":0,"to":"web-b"}`,
				[]string{"switch", "--port", "0", "--to", "web-b"}, 400, "port"},
			{"switch port 70000", "/v1/switch", `{"port":70000,"to":"web-b"}`,
				[]string{"switch", "--port", "70000", "--to", "web-b"}, 400, "port"},
			{"second active", "/v1/register", `{"name":"web-b","port":8080,"backend":"198.19.0.3:8080","state":"active"}`,
				[]string{"register", "--name", "web-b", "--port", "8080", "--backend", "198.19.0.3:8080", "--state", "active"}, 409, "switch"},
			{"bad state", "/v1/register", `{"name":"web-c","port":8080,"backend":"198.19.0.3:8080","state":"sleepy"}`,
				[]string{"register", "--name", "web-c", "--port", "8080", "--backend", "198.19.0.3:8080", "--state", "sleepy"}, 400, "state"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				tp := tp.With(t)
				checkBadInput(tp, tc.path, tc.body, tc.cli, tc.wantCode, tc.wantText)
			})
		}
		if got := tp.Status().Summary(); strings.Join(got, "\n") != strings.Join(before, "\n") {
			t.Errorf("after rejected requests the table is\n%s\nwant unchanged:\n%s", strings.Join(got, "\n"), strings.Join(before, "\n"))
		}
		tp.requireAll("http://"+sharedIP+":8080/", 10, "web-a", "after rejected requests")

		t.Run("port without a shared address", func(t *testing.T) {
			tp := NewTopology(t, Options{Driver: driver, Servers: []string{"web-a"}})
			tp.Start()
			checkBadInput(tp, "/v1/register", `{"name":"web-a","port":8080,"backend":"198.19.0.2:8080"}`,
				[]string{"register", "--name", "web-a", "--port", "8080", "--backend", "198.19.0.2:8080"}, 400, "shared.address")
			if got := tp.Status().Summary(); len(got) != 0 {
				t.Errorf("after the rejected register the table is %v, want empty", got)
			}
		})
	})
}

// checkBadInput sends one bad request to the API, then the same through the
// CLI, and checks the code, the JSON error and the CLI's exit and message.
func checkBadInput(tp *Topology, path, body string, cli []string, wantCode int, wantText string) {
	t := tp.t
	t.Helper()
	r := tp.API("POST", path, body, "")
	if r.Code != wantCode {
		t.Errorf("POST %s %s: HTTP %d %s, want %d", path, body, r.Code, r.Body, wantCode)
	}
	if r.JSONErr != nil || r.Error.Error == "" {
		t.Errorf("POST %s %s: body %q, want a JSON error object (%v)", path, body, r.Body, r.JSONErr)
	}
	if !strings.Contains(r.Error.Error+" "+r.Error.Field, wantText) {
		t.Errorf("POST %s %s: error %q field %q, want it to mention %q", path, body, r.Error.Error, r.Error.Field, wantText)
	}
	out, errOut, code := tp.CLI(nil, cli...)
	msg := out + errOut
	if code == 0 {
		t.Errorf("vipmux %q: exit 0, want non-zero\n%s", cli, msg)
	}
	if !strings.Contains(msg, wantText) {
		t.Errorf("vipmux %q printed %q, want it to mention %q", cli, msg, wantText)
	}
}

// TestSwitchUnderLoad checks issue 4's "switch is atomic: there is never a
// moment with two actives or none" on the data path: while the active
// member flips back and forth, every new connection is answered by one of
// the two servers, none is refused.
func TestSwitchUnderLoad(t *testing.T) {
	t.Parallel()
	forEachDriver(t, func(t *testing.T, driver string) {
		tp := NewTopology(t, Options{Driver: driver, Servers: []string{"web-a", "web-b"}, Extra: sharedConfig})
		tp.Start()
		tp.RegisterPort("web-a", 8080, "active")
		tp.RegisterPort("web-b", 8080, "standby")

		type result struct {
			out, errOut string
			code        int
		}
		done := make(chan result, 1)
		go func() {
			o, e, c := tp.Client(120*time.Second, "get", "-n", "300", "http://"+sharedIP+":8080/")
			done <- result{o, e, c}
		}()
		switches := 0
	loop:
		for i := 0; i < 40; i++ {
			select {
			case r := <-done:
				done <- r
				break loop
			default:
			}
			to := []string{"web-b", "web-a"}[i%2]
			if out, errOut, code := tp.CLI(nil, "switch", "--port", "8080", "--to", to); code != 0 {
				t.Errorf("switch --to %s under load: exit %d %s%s", to, code, out, errOut)
			}
			switches++
		}
		r := <-done
		got := map[string]int{}
		for _, line := range strings.Split(strings.TrimSpace(r.out), "\n") {
			got[line]++
		}
		if got["web-a"]+got["web-b"] != 300 {
			t.Errorf("300 requests during %d switches: answers %v (exit %d, %s), want all 300 by web-a or web-b", switches, got, r.code, r.errOut)
		}
		t.Logf("300 requests during %d switches: %v", switches, got)
		st := tp.States(sharedIP, 8080)
		if actives := strings.Count(fmt.Sprint(st), "active"); actives != 1 || len(st) != 2 {
			t.Errorf("after the switches: states %v, want two members, one active", st)
		}
	})
}
