//go:build linux

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The test network (addresses from 198.18.0.0/15 only):
//
//	client ns                gateway ns                           server ns i
//	c0 198.18.0.1/24 ─veth─ f0 (no IP; taken over by vipmux)
//	                          br0 198.19.0.1/24 ── sI ─veth─ e0 198.19.0.(2+i)/24
//
// With driver "tap", f0 is enslaved to a bridge brf and vipmux's TAP device
// vtap0 joins brf once vipmux has created it.
//
// With Options.IPv6, the client's c0 also has 2001:db8:18::1/64 (frontNet6
// joins nic.networks), br0 has 2001:db8:19::1/64 and server i's e0
// 2001:db8:19::(2+i)/64 (addresses from 2001:db8::/32 only). f0 keeps IPv6
// off in the gateway's kernel: only vipmux answers NDP there.
const (
	clientIP   = "198.18.0.1"
	frontNet   = "198.18.0.0/24"
	gatewayIP  = "198.19.0.1"
	controlURL = "http://127.0.0.1:7070"
	tapName    = "vtap0"
	// tapMAC is the MAC configured for the TAP driver, so the test knows
	// what the client must learn in ARP.
	tapMAC = "02:00:5e:00:53:01"

	clientIP6  = "2001:db8:18::1"
	frontNet6  = "2001:db8:18::/64"
	gatewayIP6 = "2001:db8:19::1"
)

// drivers are the front NIC drivers every mode 1 and mode 2 test runs with
// (issue 3, acceptance 7).
var drivers = []string{"afpacket", "tap"}

var (
	binDir       string
	vipmuxBin    string // empty when missing; see vipmuxMissing
	vipmuxErr    string // why vipmuxBin is empty
	namesrvBin   string
	tcpclientBin string

	// bigTransfer serialises the 256 MiB transfers, so that two of them never
	// compete for the machine's two cores.
	bigTransfer sync.Mutex
)

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", "vipmux-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		binDir = dir
		build := func(out, pkg string) error {
			cmd := exec.Command("go", "build", "-o", out, pkg)
			cmd.Dir = ".."
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if b, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
			}
			return nil
		}
		namesrvBin = filepath.Join(dir, "namesrv")
		tcpclientBin = filepath.Join(dir, "tcpclient")
		for out, pkg := range map[string]string{namesrvBin: "./e2e/namesrv", tcpclientBin: "./e2e/tcpclient"} {
			if err := build(out, pkg); err != nil {
				fmt.Fprintln(os.Stderr, "e2e:", err)
				return 1
			}
		}
		switch {
		case os.Getenv("VIPMUX_BIN") != "":
			vipmuxBin = os.Getenv("VIPMUX_BIN")
		default:
			if _, err := os.Stat("../cmd/vipmux"); err != nil {
				vipmuxErr = "cmd/vipmux does not exist yet"
				break
			}
			out := filepath.Join(dir, "vipmux")
			if err := build(out, "./cmd/vipmux"); err != nil {
				vipmuxErr = err.Error()
				break
			}
			vipmuxBin = out
		}
		return m.Run()
	}()
	os.Exit(code)
}

// inCI reports whether the suite must run rather than skip.
func inCI() bool { return os.Getenv("CI") == "true" }

// requireRoot skips the test without root or the tools the suite needs;
// with CI=true that is a failure instead, because a skip in CI hides a
// broken test environment.
func requireRoot(t testing.TB) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range []string{"ip", "curl", "ethtool"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("e2e needs %s (apt-get install -y iproute2 curl ethtool)", strings.Join(missing, ", "))
	if inCI() {
		t.Fatal(msg + "; CI=true, so this is a failure, not a skip")
	}
	t.Skip(msg)
}

// requireVipmux is requireRoot plus a built vipmux binary.
func requireVipmux(t testing.TB) {
	t.Helper()
	requireRoot(t)
	if vipmuxBin != "" {
		return
	}
	if strings.HasPrefix(vipmuxErr, "go build") || inCI() {
		t.Fatalf("no vipmux binary: %s", vipmuxErr)
	}
	t.Skipf("no vipmux binary: %s", vipmuxErr)
}

// run runs a command with a timeout and returns its stdout, stderr and exit
// code (-1 when it could not run or was killed by the timeout).
func run(timeout time.Duration, env []string, name string, args ...string) (stdout, stderr string, code int) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = cleanEnv(env)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	code = 0
	if err != nil {
		code = -1
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() >= 0 {
			code = ee.ExitCode()
		} else {
			fmt.Fprintf(&e, "\n[e2e: %s: %v]", name, err)
		}
	}
	return o.String(), e.String(), code
}

// cleanEnv is the environment for commands the tests start: the test's
// own, minus any VIPMUX_* and proxy variables that could redirect them,
// plus extra.
func cleanEnv(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "VIPMUX_") || strings.HasSuffix(strings.ToLower(k), "_proxy") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// must runs a setup command and fails the test if it fails.
func must(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, errOut, code := run(30*time.Second, nil, name, args...)
	if code != 0 {
		t.Fatalf("%s %s: exit %d: %s%s", name, strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// Server is one server computer: a namespace running namesrv.
type Server struct {
	Name string // e.g. "web-a"; namesrv answers with it
	NS   string
	IP   string // on the back link, e.g. "198.19.0.2"
	IP6  string // on the back link with Options.IPv6, e.g. "2001:db8:19::2"; else empty
}

// Options configure a Topology.
type Options struct {
	// Driver is the front NIC driver: "afpacket" or "tap".
	Driver string
	// Servers are the names of the server computers, in order: the i-th
	// gets back-side address 198.19.0.(2+i).
	Servers []string
	// Token, when set, is written to a token file that the config names.
	Token string
	// Extra is TOML appended to the generated config (e.g. a [dispatch] or
	// [shared] table).
	Extra string
	// ControlListen is the control API's listen address; empty means
	// 127.0.0.1:7070. Tests whose server namespaces call the API (vipmux
	// run) use the back-side address, gatewayControl.
	ControlListen string
	// Wrap, when set, is a command line that `vipmux serve ...` is appended
	// to, run inside the gateway namespace: e.g. setpriv with a user and
	// capabilities (caps_test.go).
	Wrap []string
	// IPv6 adds IPv6 beside IPv4: on the client's front link (c0, and
	// frontNet6 in nic.networks) and on the back link (br0 and every
	// server), without DAD so that the addresses are usable at once.
	IPv6 bool
}

// Topology is one test's private set of namespaces: a client, a gateway and
// the server computers. Everything is removed in t.Cleanup.
type Topology struct {
	t         testing.TB
	opts      Options
	dir       string
	id        string
	ClientNS  string // namespace names
	GatewayNS string
	Servers   []*Server
	// FrontMAC is the MAC the client must learn for every gateway IP.
	FrontMAC string

	gw *Gateway // the last one started
}

// gwLog is the output of the last gateway started, for probes.
func (tp *Topology) gwLog() string {
	if tp.gw == nil {
		return ""
	}
	return tp.gw.Log()
}

// NewTopology builds the namespaces and links and starts one namesrv per
// server, waiting until each accepts. It does not start vipmux.
func NewTopology(t testing.TB, opts Options) *Topology {
	t.Helper()
	requireVipmux(t)
	if len(opts.Servers) > 200 {
		t.Fatalf("NewTopology: %d servers, at most 200", len(opts.Servers))
	}
	var rnd [3]byte
	rand.Read(rnd[:])
	id := hex.EncodeToString(rnd[:])
	tp := &Topology{
		t:         t,
		opts:      opts,
		dir:       t.TempDir(),
		id:        id,
		ClientNS:  "vmx" + id + "cli",
		GatewayNS: "vmx" + id + "gw",
	}
	var created []string
	t.Cleanup(func() {
		// Runs last (cleanups are LIFO): every process in the namespaces
		// has been stopped by then.
		for _, ns := range created {
			if _, e, code := run(10*time.Second, nil, "ip", "netns", "del", ns); code != 0 {
				t.Errorf("cleanup: ip netns del %s: %s", ns, e)
			}
		}
		out, _, _ := run(10*time.Second, nil, "ip", "netns", "list")
		if strings.Contains(out, "vmx"+id) {
			t.Errorf("cleanup: namespaces of this test left behind:\n%s", out)
		}
	})
	addNS := func(ns string) {
		must(t, "ip", "netns", "add", ns)
		created = append(created, ns)
		must(t, "ip", "-n", ns, "link", "set", "lo", "up")
		// No IPv6 anywhere: its DAD and router solicitations would only add
		// noise on the links.
		must(t, "ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	}
	addNS(tp.ClientNS)
	addNS(tp.GatewayNS)

	// The front link. veth ends are created directly inside the namespaces,
	// so no name ever appears in (or collides in) the host namespace.
	must(t, "ip", "link", "add", "c0", "netns", tp.ClientNS, "type", "veth", "peer", "name", "f0", "netns", tp.GatewayNS)
	must(t, "ip", "-n", tp.ClientNS, "addr", "add", clientIP+"/24", "dev", "c0")
	if opts.IPv6 {
		enableIPv6(t, tp.ClientNS, "c0")
		must(t, "ip", "-n", tp.ClientNS, "addr", "add", clientIP6+"/64", "dev", "c0", "nodad")
	}
	// A veth hands its peer frames with a partial checksum (CHECKSUM_PARTIAL:
	// the kernel leaves the TCP checksum to an offload that never happens on
	// a veth) and, with TSO/GSO, segments larger than the MTU. A frame from a
	// real wire has neither. vipmux reads the raw frames of f0, so the client
	// side must send what a wire would: full checksums, MTU-sized frames.
	must(t, "ip", "netns", "exec", tp.ClientNS, "ethtool", "-K", "c0", "tx", "off", "tso", "off", "gso", "off")
	must(t, "ip", "-n", tp.ClientNS, "link", "set", "c0", "up")

	// The gateway's kernel must stay out of the front link: no IP on f0, and
	// should it ever get one, no ARP answers and no forwarding.
	must(t, "ip", "netns", "exec", tp.GatewayNS, "sysctl", "-q", "-w",
		"net.ipv4.conf.f0.arp_ignore=8", "net.ipv6.conf.f0.disable_ipv6=1", "net.ipv4.ip_forward=0")
	must(t, "ip", "-n", tp.GatewayNS, "link", "set", "f0", "up")
	switch opts.Driver {
	case "afpacket":
		tp.FrontMAC = linkMAC(t, tp.GatewayNS, "f0")
	case "tap":
		must(t, "ip", "-n", tp.GatewayNS, "link", "add", "brf", "type", "bridge")
		must(t, "ip", "-n", tp.GatewayNS, "link", "set", "f0", "master", "brf")
		must(t, "ip", "-n", tp.GatewayNS, "link", "set", "brf", "up")
		tp.FrontMAC = tapMAC
	default:
		t.Fatalf("NewTopology: unknown driver %q", opts.Driver)
	}

	// The back link: a bridge in the gateway namespace, one veth per server.
	must(t, "ip", "-n", tp.GatewayNS, "link", "add", "br0", "type", "bridge")
	must(t, "ip", "-n", tp.GatewayNS, "addr", "add", gatewayIP+"/24", "dev", "br0")
	if opts.IPv6 {
		enableIPv6(t, tp.GatewayNS, "br0")
		must(t, "ip", "-n", tp.GatewayNS, "addr", "add", gatewayIP6+"/64", "dev", "br0", "nodad")
	}
	must(t, "ip", "-n", tp.GatewayNS, "link", "set", "br0", "up")
	for i, name := range opts.Servers {
		s := &Server{Name: name, NS: fmt.Sprintf("vmx%ss%d", id, i), IP: fmt.Sprintf("198.19.0.%d", 2+i)}
		addNS(s.NS)
		peer := fmt.Sprintf("s%d", i)
		must(t, "ip", "link", "add", "e0", "netns", s.NS, "type", "veth", "peer", "name", peer, "netns", tp.GatewayNS)
		must(t, "ip", "-n", tp.GatewayNS, "link", "set", peer, "master", "br0")
		must(t, "ip", "-n", tp.GatewayNS, "link", "set", peer, "up")
		must(t, "ip", "-n", s.NS, "addr", "add", s.IP+"/24", "dev", "e0")
		if opts.IPv6 {
			// Before namesrv starts: its ":8080" is then dual-stack.
			s.IP6 = fmt.Sprintf("2001:db8:19::%x", 2+i)
			enableIPv6(t, s.NS, "e0")
			must(t, "ip", "-n", s.NS, "addr", "add", s.IP6+"/64", "dev", "e0", "nodad")
		}
		must(t, "ip", "-n", s.NS, "link", "set", "e0", "up")
		tp.Servers = append(tp.Servers, s)
		tp.startProc("namesrv-"+name, s.NS, namesrvBin,
			"--name", name, "--listen", ":8080", "--listen", ":9090", "--raw", ":7000")
	}
	for _, s := range tp.Servers {
		tp.waitServer(s)
	}
	return tp
}

// enableIPv6 turns IPv6 on for dev (and lo) in ns, which addNS turned off:
// no duplicate address detection (addresses are usable at once), no router
// advertisements or solicitations.
func enableIPv6(t testing.TB, ns, dev string) {
	t.Helper()
	c := "net.ipv6.conf." + dev + "."
	must(t, "ip", "netns", "exec", ns, "sysctl", "-q", "-w",
		"net.ipv6.conf.lo.disable_ipv6=0",
		c+"accept_dad=0", c+"accept_ra=0", c+"router_solicitations=0", c+"disable_ipv6=0")
}

// With returns a copy of tp that reports to t: use it inside subtests, so
// that a helper's t.Fatal stops the subtest's goroutine, not its parent's.
func (tp *Topology) With(t testing.TB) *Topology {
	c := *tp
	c.t = t
	return &c
}

// linkMAC reads an interface's MAC inside a namespace.
func linkMAC(t testing.TB, ns, dev string) string {
	t.Helper()
	var links []struct {
		Address string `json:"address"`
	}
	out := must(t, "ip", "-j", "-n", ns, "link", "show", dev)
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -j link show %s in %s: %q: %v", dev, ns, out, err)
	}
	return strings.ToLower(links[0].Address)
}

// proc is a long-running process the test started in a namespace.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string // path of its combined stdout and stderr
	done chan struct{}
	err  error // valid after done
}

// startProc starts bin in namespace ns with its output in a log file. A
// cleanup kills it (SIGKILL) if it still runs, and on failure logs its
// output.
func (tp *Topology) startProc(name, ns, bin string, args ...string) *proc {
	t := tp.t
	t.Helper()
	p := &proc{name: name, log: filepath.Join(tp.dir, name+".log"), done: make(chan struct{})}
	f, err := os.Create(p.log)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", ns, bin}, args...)...)
	p.cmd.Env = cleanEnv(nil)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			p.cmd.Process.Kill()
			select {
			case <-p.done:
			case <-time.After(5 * time.Second):
				t.Errorf("cleanup: %s (pid %d) did not die after SIGKILL", name, p.cmd.Process.Pid)
			}
		}
		if t.Failed() {
			t.Logf("--- %s log (%s):\n%s", name, strings.Join(p.cmd.Args, " "), p.output())
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) output() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// exitCode is the process's exit status; -1 for a death by signal.
func (p *proc) exitCode() int {
	<-p.done
	if p.err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// stop sends sig and waits up to timeout for the process to exit. It
// returns the exit code, or ok=false when the process did not exit in time;
// then it sends SIGQUIT, so that the Go runtime writes every goroutine's
// stack to the log.
func (p *proc) stop(sig syscall.Signal, timeout time.Duration) (code int, elapsed time.Duration, ok bool) {
	start := time.Now()
	if !p.exited() {
		p.cmd.Process.Signal(sig)
	}
	select {
	case <-p.done:
		return p.exitCode(), time.Since(start), true
	case <-time.After(timeout):
		// Ask the Go runtime for every goroutine's stack (SIGQUIT), so
		// that the log shows where the process hangs.
		p.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-p.done:
		case <-time.After(2 * time.Second):
		}
		return 0, time.Since(start), false
	}
}

// waitServer polls a server from the gateway namespace (over the back
// link) until it answers with its name.
func (tp *Topology) waitServer(s *Server) {
	tp.t.Helper()
	urls := []string{fmt.Sprintf("http://%s:8080/", s.IP)}
	if s.IP6 != "" {
		urls = append(urls, fmt.Sprintf("http://[%s]:8080/", s.IP6))
	}
	for _, url := range urls {
		var last string
		for i := 0; ; i++ {
			out, errOut, code := run(3*time.Second, nil, "ip", "netns", "exec", tp.GatewayNS, "curl", "-sS", "-g", "--max-time", "1", url)
			if code == 0 && strings.TrimSpace(out) == s.Name {
				break
			}
			last = fmt.Sprintf("exit %d: %q %s", code, out, errOut)
			if i >= 100 {
				tp.t.Fatalf("server %s at %s never answered from the gateway namespace: %s", s.Name, url, last)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// Server returns the server with the given name.
func (tp *Topology) Server(name string) *Server {
	for _, s := range tp.Servers {
		if s.Name == name {
			return s
		}
	}
	tp.t.Fatalf("no server %q in the topology", name)
	return nil
}

// Config returns the TOML config for this topology: the contract keys of
// issue 3 plus opts.Extra.
func (tp *Topology) Config() string {
	var b strings.Builder
	b.WriteString("[nic]\n")
	fmt.Fprintf(&b, "driver = %q\n", tp.opts.Driver)
	if tp.opts.Driver == "tap" {
		fmt.Fprintf(&b, "interface = %q\nmac = %q\n", tapName, tapMAC)
	} else {
		fmt.Fprintf(&b, "interface = %q\n", "f0")
	}
	if tp.opts.IPv6 {
		fmt.Fprintf(&b, "networks = [%q, %q]\n", frontNet, frontNet6)
	} else {
		fmt.Fprintf(&b, "networks = [%q]\n", frontNet)
	}
	fmt.Fprintf(&b, "\n[control]\nlisten = %q\n", tp.controlListen())
	if tp.opts.Token != "" {
		fmt.Fprintf(&b, "token_file = %q\n", tp.TokenFile())
	} else if tp.opts.ControlListen != "" && !strings.HasPrefix(tp.opts.ControlListen, "127.") {
		// The back-side network is the test's own namespace: no token
		// on purpose (serve refuses it otherwise).
		b.WriteString("insecure = true\n")
	}
	fmt.Fprintf(&b, "\n[state]\npath = %q\n", filepath.Join(tp.dir, "state.json"))
	if tp.opts.Extra != "" {
		b.WriteString("\n" + tp.opts.Extra + "\n")
	}
	return b.String()
}

// gatewayControl is the control API on the gateway's back-side address,
// reachable from the server namespaces (Options.ControlListen).
const gatewayControl = gatewayIP + ":7070"

func (tp *Topology) controlListen() string {
	if tp.opts.ControlListen != "" {
		return tp.opts.ControlListen
	}
	return "127.0.0.1:7070"
}

// ControlURL is the control API's URL (controlURL unless
// Options.ControlListen says otherwise).
func (tp *Topology) ControlURL() string { return "http://" + tp.controlListen() }

// TokenFile is the path of the token file (written on first use).
func (tp *Topology) TokenFile() string {
	p := filepath.Join(tp.dir, "token")
	if _, err := os.Stat(p); err != nil {
		if err := os.WriteFile(p, []byte(tp.opts.Token+"\n"), 0o600); err != nil {
			tp.t.Fatalf("write token file: %v", err)
		}
	}
	return p
}

// WriteConfig writes a config file and returns its path.
func (tp *Topology) WriteConfig(name, text string) string {
	tp.t.Helper()
	p := filepath.Join(tp.dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		tp.t.Fatalf("write config: %v", err)
	}
	return p
}

// Gateway is a running `vipmux serve`.
type Gateway struct {
	tp     *Topology
	proc   *proc
	Config string // path
}

// Start writes the config and starts the gateway, waits until /healthz
// answers 200 (and, for tap, bridges vtap0 to the front link), and stops
// it with SIGTERM in cleanup, expecting exit status 0 within 5 s.
func (tp *Topology) Start() *Gateway {
	tp.t.Helper()
	g := tp.StartConfig(tp.WriteConfig(fmt.Sprintf("vipmux-%d.toml", time.Now().UnixNano()), tp.Config()))
	return g
}

// StartConfig is Start with a given config file; args are extra flags
// of serve (e.g. --reset-state).
func (tp *Topology) StartConfig(path string, args ...string) *Gateway {
	t := tp.t
	t.Helper()
	g := &Gateway{tp: tp, Config: path}
	tp.gw = g
	argv := append(tp.serveCommand(), append([]string{"--config", path}, args...)...)
	g.proc = tp.startProc(fmt.Sprintf("vipmux-%d", time.Now().UnixNano()), tp.GatewayNS, argv[0], argv[1:]...)
	t.Cleanup(func() {
		if g.proc.exited() {
			return
		}
		code, elapsed, ok := g.proc.stop(syscall.SIGTERM, 5*time.Second)
		switch {
		case !ok:
			t.Errorf("cleanup: vipmux serve did not exit within %v of SIGTERM", elapsed)
		case code != 0:
			t.Errorf("cleanup: vipmux serve exited %d after SIGTERM, want 0", code)
		}
	})
	tapDone := tp.opts.Driver != "tap"
	deadline := time.Now().Add(10 * time.Second)
	var last string
	for i := 0; ; i++ {
		if g.proc.exited() {
			t.Fatalf("vipmux serve exited %d before it was ready:\n%s", g.proc.exitCode(), g.proc.output())
		}
		if !tapDone && tp.linkExists(tp.GatewayNS, tapName) {
			// vipmux created the TAP device; plug it into the front bridge.
			must(t, "ip", "netns", "exec", tp.GatewayNS, "sysctl", "-q", "-w", "net.ipv6.conf."+tapName+".disable_ipv6=1")
			must(t, "ip", "-n", tp.GatewayNS, "link", "set", tapName, "master", "brf")
			must(t, "ip", "-n", tp.GatewayNS, "link", "set", tapName, "up")
			tapDone = true
		}
		if tapDone {
			code, body := g.HealthCheck()
			if code == 200 {
				return g
			}
			last = fmt.Sprintf("HTTP %d %s", code, body)
		} else {
			last = "no TAP device " + tapName + " yet"
		}
		if time.Now().After(deadline) || i > 1000 {
			t.Fatalf("vipmux serve not ready within 10 s: %s\nlog:\n%s", last, g.proc.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// serveCommand is `vipmux serve`, inside Options.Wrap when that is set.
func (tp *Topology) serveCommand() []string {
	return append(slices.Clone(tp.opts.Wrap), vipmuxBin, "serve")
}

func (tp *Topology) linkExists(ns, dev string) bool {
	_, _, code := run(5*time.Second, nil, "ip", "-n", ns, "link", "show", dev)
	return code == 0
}

// HealthCheck GETs /healthz in the gateway namespace: HTTP code and body
// (code 0 when nothing answered).
func (g *Gateway) HealthCheck() (int, string) {
	args := []string{"-sS", "--max-time", "2", "-w", "\n%{http_code}"}
	if g.tp.opts.Token != "" {
		args = append(args, "-H", "Authorization: Bearer "+g.tp.opts.Token)
	}
	out, _, _ := g.tp.GatewayCurl(append(args, g.tp.ControlURL()+"/healthz")...)
	body, codeStr, _ := cutLast(out, "\n")
	var code int
	fmt.Sscanf(codeStr, "%d", &code)
	return code, body
}

func cutLast(s, sep string) (before, after string, found bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return "", s, false
	}
	return s[:i], s[i+len(sep):], true
}

// Stop sends sig and returns the exit code; it fails the test when the
// gateway does not exit within timeout.
func (g *Gateway) Stop(sig syscall.Signal, timeout time.Duration) int {
	g.tp.t.Helper()
	code, elapsed, ok := g.proc.stop(sig, timeout)
	if !ok {
		g.tp.t.Fatalf("vipmux serve did not exit within %v of %v", elapsed, sig)
	}
	return code
}

// Log is the gateway's output so far.
func (g *Gateway) Log() string { return g.proc.output() }

// CLI runs `vipmux ARGS...` in the gateway namespace (VIPMUX_GATEWAY set
// to the test's gateway, so that a host's /etc/vipmux/vipmux.toml is never
// read; env may override it, "VIPMUX_GATEWAY=" unsets it) and returns
// stdout, stderr and the exit code.
func (tp *Topology) CLI(env []string, args ...string) (stdout, stderr string, code int) {
	env = append([]string{"VIPMUX_GATEWAY=" + tp.ControlURL()}, env...)
	return run(20*time.Second, env, "ip", append([]string{"netns", "exec", tp.GatewayNS, vipmuxBin}, args...)...)
}

// MustCLI runs the CLI and fails the test unless it exits 0.
func (tp *Topology) MustCLI(args ...string) string {
	tp.t.Helper()
	out, errOut, code := tp.CLI(nil, args...)
	if code != 0 {
		tp.t.Fatalf("vipmux %s: exit %d, want 0\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// Register runs `vipmux register --name NAME --ip IP --backend BACKEND` and
// requires success (mode 1).
func (tp *Topology) Register(name, ip, backend string) {
	tp.t.Helper()
	tp.MustCLI("register", "--name", name, "--ip", ip, "--backend", backend)
}

// Status is the JSON of GET /v1/status.
type Status struct {
	Shared   string `json:"shared"`
	Bindings []struct {
		IP      string `json:"ip"`
		Port    int    `json:"port"`
		Members []struct {
			Name        string `json:"name"`
			Backend     string `json:"backend"`
			State       string `json:"state"`
			Connections int64  `json:"connections"`
		} `json:"members"`
	} `json:"bindings"`
}

// Summary renders the table as sorted "ip:port name=state" strings, for
// comparisons.
func (s Status) Summary() []string {
	var out []string
	for _, b := range s.Bindings {
		for _, m := range b.Members {
			out = append(out, fmt.Sprintf("%s:%d %s@%s=%s", b.IP, b.Port, m.Name, m.Backend, m.State))
		}
	}
	slices.Sort(out)
	return out
}

// Status runs `vipmux status --json` and decodes it.
func (tp *Topology) Status(env ...string) Status {
	tp.t.Helper()
	out, errOut, code := tp.CLI(env, "status", "--json")
	if code != 0 {
		tp.t.Fatalf("vipmux status --json: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	var st Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		tp.t.Fatalf("vipmux status --json: %v\n%s", err, out)
	}
	return st
}

// GatewayCurl runs curl in the gateway namespace.
func (tp *Topology) GatewayCurl(args ...string) (stdout, stderr string, code int) {
	return run(15*time.Second, nil, "ip", append([]string{"netns", "exec", tp.GatewayNS, "curl"}, args...)...)
}

// APIResponse is one raw control API exchange.
type APIResponse struct {
	Code  int
	Body  string
	Error struct {
		Error string `json:"error"`
		Field string `json:"field"`
	}
	JSONErr error // decoding Body as the error object
}

// API sends a request to the control API with curl (from the gateway
// namespace); token "" sends no Authorization header.
func (tp *Topology) API(method, path, body, token string) APIResponse {
	tp.t.Helper()
	args := []string{"-sS", "--max-time", "5", "-X", method, "-w", "\n%{http_code}"}
	if body != "" {
		args = append(args, "-H", "Content-Type: application/json", "--data-binary", body)
	}
	if token != "" {
		args = append(args, "-H", "Authorization: Bearer "+token)
	}
	out, errOut, code := tp.GatewayCurl(append(args, tp.ControlURL()+path)...)
	if code != 0 {
		tp.t.Fatalf("curl %s %s: exit %d: %s", method, path, code, errOut)
	}
	var r APIResponse
	var codeStr string
	r.Body, codeStr, _ = cutLast(out, "\n")
	fmt.Sscanf(codeStr, "%d", &r.Code)
	r.JSONErr = json.Unmarshal([]byte(r.Body), &r.Error)
	return r
}

// Curl runs curl in the client namespace with a 5 s limit.
func (tp *Topology) Curl(args ...string) (stdout, stderr string, code int) {
	return run(15*time.Second, nil, "ip", append([]string{"netns", "exec", tp.ClientNS, "curl", "-sS", "--max-time", "5"}, args...)...)
}

// Get curls url from the client and returns the trimmed body; it fails the
// test on any error.
func (tp *Topology) Get(url string) string {
	tp.t.Helper()
	out, errOut, code := tp.Curl("--fail", url)
	if code != 0 {
		tp.t.Fatalf("client curl %s: exit %d: %s", url, code, errOut)
	}
	return strings.TrimSpace(out)
}

// Client runs tcpclient in the client namespace.
func (tp *Topology) Client(timeout time.Duration, args ...string) (stdout, stderr string, code int) {
	return run(timeout, nil, "ip", append([]string{"netns", "exec", tp.ClientNS, tcpclientBin}, args...)...)
}

// ClientJSON runs tcpclient and decodes the last line of its output into v.
func (tp *Topology) ClientJSON(timeout time.Duration, v any, args ...string) {
	tp.t.Helper()
	out, errOut, code := tp.Client(timeout, args...)
	out = strings.TrimSpace(out)
	if i := strings.LastIndex(out, "\n"); i >= 0 {
		out = out[i+1:]
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		tp.t.Fatalf("tcpclient %s: exit %d, output %q: %v\nstderr: %s", strings.Join(args, " "), code, out, err, errOut)
	}
}

// DialResult is tcpclient dial's output.
type DialResult struct {
	OK  bool   `json:"ok"`
	Err string `json:"err"`
	MS  int64  `json:"ms"`
}

// Dial dials addr from the client with a kernel socket.
func (tp *Topology) Dial(addr string, timeout time.Duration) DialResult {
	tp.t.Helper()
	var r DialResult
	tp.ClientJSON(timeout+10*time.Second, &r, "dial", "-timeout", timeout.String(), addr)
	return r
}

// Transfer is tcpclient's output for download, upload, halfclose, stream.
type Transfer struct {
	Bytes   int64   `json:"bytes"`
	SHA256  string  `json:"sha256"`
	Reply   string  `json:"reply"`
	Server  string  `json:"server"`
	Err     string  `json:"err"`
	Seconds float64 `json:"seconds"`
}

// Neighbour is the client's neighbour entry for an IP on c0.
type Neighbour struct {
	Dst    string   `json:"dst"`
	LLAddr string   `json:"lladdr"`
	State  []string `json:"state"`
}

// WaitNeighMAC polls the client's neighbour entry for ip (every 20 ms)
// until its link-layer address is mac or within has passed, and returns the
// last entry seen and the time it took.
func (tp *Topology) WaitNeighMAC(ip, mac string, within time.Duration) (Neighbour, time.Duration) {
	tp.t.Helper()
	start := time.Now()
	for {
		last, _ := tp.Neigh(ip)
		if took := time.Since(start); last.LLAddr == mac || took >= within {
			return last, took
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Neigh returns the client's neighbour entry for ip (ok=false: none).
func (tp *Topology) Neigh(ip string) (Neighbour, bool) {
	tp.t.Helper()
	var ns []Neighbour
	out := must(tp.t, "ip", "-j", "-n", tp.ClientNS, "neigh", "show", "dev", "c0")
	if strings.TrimSpace(out) == "" {
		return Neighbour{}, false
	}
	if err := json.Unmarshal([]byte(out), &ns); err != nil {
		tp.t.Fatalf("ip -j neigh show dev c0: %v\n%s", err, out)
	}
	for _, n := range ns {
		if n.Dst == ip {
			n.LLAddr = strings.ToLower(n.LLAddr)
			return n, true
		}
	}
	return Neighbour{}, false
}

// FlushNeigh empties the client's neighbour table on c0.
func (tp *Topology) FlushNeigh() {
	tp.t.Helper()
	must(tp.t, "ip", "-n", tp.ClientNS, "neigh", "flush", "dev", "c0")
}

// requireNoARPAnswer fails the test if the client holds a link-layer address
// for ip: after a failed attempt to reach it, the entry must be absent,
// INCOMPLETE or FAILED.
func (tp *Topology) requireNoARPAnswer(ip string) {
	tp.t.Helper()
	n, ok := tp.Neigh(ip)
	if !ok {
		return
	}
	if n.LLAddr != "" {
		tp.t.Errorf("client neighbour entry for %s = %s %v, want no lladdr (nobody should answer ARP for it)", ip, n.LLAddr, n.State)
		return
	}
	for _, s := range n.State {
		if s != "INCOMPLETE" && s != "FAILED" {
			tp.t.Errorf("client neighbour entry for %s: state %v, want INCOMPLETE or FAILED", ip, n.State)
		}
	}
}

// requireARPAnswer fails the test unless the client learnt ip at the
// front NIC's MAC.
func (tp *Topology) requireARPAnswer(ip string) {
	tp.t.Helper()
	n, ok := tp.Neigh(ip)
	switch {
	case !ok:
		tp.t.Errorf("client has no neighbour entry for %s, want lladdr %s", ip, tp.FrontMAC)
	case n.LLAddr != tp.FrontMAC:
		tp.t.Errorf("client neighbour entry for %s = %q %v, want lladdr %s (the front NIC's MAC)", ip, n.LLAddr, n.State, tp.FrontMAC)
	}
}

// forEachDriver runs fn as a subtest per front NIC driver.
func forEachDriver(t *testing.T, fn func(t *testing.T, driver string)) {
	for _, d := range drivers {
		t.Run(d, func(t *testing.T) { fn(t, d) })
	}
}

// FrontHost is another host on the front link (a namespace with a macvlan
// on the client's c0, so that it shares the client's L2 segment with the
// gateway's front NIC).
type FrontHost struct {
	NS  string
	MAC string // lowercase, as ip and vipmux print it
	IP  string
}

// AddFrontHost attaches a host that holds ip (in frontNet) to the front link
// at mac; it is removed in t.Cleanup.
func (tp *Topology) AddFrontHost(name, ip, mac string) *FrontHost {
	t := tp.t
	t.Helper()
	h := &FrontHost{NS: "vmx" + tp.id + name, MAC: strings.ToLower(mac), IP: ip}
	must(t, "ip", "netns", "add", h.NS)
	t.Cleanup(func() {
		if _, e, code := run(10*time.Second, nil, "ip", "netns", "del", h.NS); code != 0 {
			t.Errorf("cleanup: ip netns del %s: %s", h.NS, e)
		}
	})
	must(t, "ip", "-n", h.NS, "link", "set", "lo", "up")
	must(t, "ip", "netns", "exec", h.NS, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	must(t, "ip", "-n", tp.ClientNS, "link", "add", "link", "c0", "name", "h0", "address", h.MAC, "type", "macvlan", "mode", "bridge")
	must(t, "ip", "-n", tp.ClientNS, "link", "set", "h0", "netns", h.NS)
	must(t, "ip", "-n", h.NS, "addr", "add", ip+"/24", "dev", "h0")
	must(t, "ip", "-n", h.NS, "link", "set", "h0", "up")
	return h
}
