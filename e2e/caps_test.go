//go:build linux

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The unprivileged user that the gateway runs as in these tests: nobody.
const (
	capsUID = 65534
	capsGID = 65534
)

// wantCapEff is the effective capability set of a gateway that holds
// exactly CAP_NET_ADMIN (12) and CAP_NET_RAW (13), as /proc/PID/status
// prints it.
const wantCapEff = "0000000000003000"

// setpriv returns the command line that drops to capsUID/capsGID with
// exactly caps (setpriv's syntax: "-all,+net_raw") as inheritable, ambient
// and bounding sets: what systemd's User=, AmbientCapabilities= and
// CapabilityBoundingSet= do for packaging/vipmux.service.
func setpriv(caps string) []string {
	return []string{"setpriv",
		fmt.Sprintf("--reuid=%d", capsUID), fmt.Sprintf("--regid=%d", capsGID), "--clear-groups",
		"--inh-caps=" + caps, "--ambient-caps=" + caps, "--bounding-set=" + caps}
}

// requireSetpriv fails (CI) or skips without setpriv (util-linux).
func requireSetpriv(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("setpriv"); err != nil {
		if inCI() {
			t.Fatal("setpriv (util-linux) is missing; CI=true, so this is a failure, not a skip")
		}
		t.Skip("setpriv (util-linux) is missing")
	}
}

// unprivilegedDirs lets capsUID read the topology's config and write its
// state file: the test's temporary directory is root's, mode 0700.
func (tp *Topology) unprivilegedDirs() {
	tp.t.Helper()
	if err := os.Chmod(filepath.Dir(tp.dir), 0o711); err != nil {
		tp.t.Fatal(err)
	}
	if err := os.Chown(tp.dir, capsUID, capsGID); err != nil {
		tp.t.Fatal(err)
	}
}

// tunWrap returns a command prefix that makes /dev/net/tun usable by
// capsUID inside the gateway's private mount namespace (the one that `ip
// netns exec` makes), or nil when it is already. A standard system has
// /dev/net/tun at mode 0666; a machine without udev may have it at 0600
// (root only). The host's /dev is not changed: a 0666 node of the same
// device is bind-mounted over it in that namespace only.
func tunWrap(t *testing.T, dir string) []string {
	t.Helper()
	fi, err := os.Stat("/dev/net/tun")
	if err != nil {
		t.Fatalf("stat /dev/net/tun: %v", err)
	}
	if fi.Mode().Perm()&0o006 == 0o006 {
		return nil
	}
	st := fi.Sys().(*syscall.Stat_t)
	node := filepath.Join(dir, "tun")
	if err := unix.Mknod(node, unix.S_IFCHR|0o666, int(st.Rdev)); err != nil {
		t.Fatalf("mknod %s: %v", node, err)
	}
	if err := os.Chmod(node, 0o666); err != nil { // past the umask
		t.Fatal(err)
	}
	return []string{"sh", "-c", `mount --bind "$0" /dev/net/tun && exec "$@"`, node}
}

// sysctl reads a sysctl inside a namespace.
func sysctl(t testing.TB, ns, key string) string {
	t.Helper()
	return strings.TrimSpace(must(t, "ip", "netns", "exec", ns, "sysctl", "-n", key))
}

// procStatus returns the named fields of /proc/PID/status.
func procStatus(t testing.TB, pid int, fields ...string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read status of gateway pid %d: %v", pid, err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		for _, f := range fields {
			if k == f {
				got[f] = strings.Join(strings.Fields(v), " ")
			}
		}
	}
	return got
}

// TestCapabilities runs `vipmux serve` as nobody with only CAP_NET_RAW and
// CAP_NET_ADMIN (as packaging/vipmux.service does), with each front NIC
// driver: it takes over or creates the NIC, sets the interface's sysctls,
// persists its table and proxies a request. Without either capability it
// refuses to start, with an error that names the missing one, and leaves
// the interface as it was.
func TestCapabilities(t *testing.T) {
	requireVipmux(t)
	requireSetpriv(t)
	const need = "-all,+net_raw,+net_admin"
	for _, tc := range []struct {
		driver string
		// dev is the front interface whose sysctls serve sets.
		dev string
		// refused are capability sets that must not be enough, and the
		// texts that serve's error must contain with each.
		refused []struct{ caps, want string }
	}{
		{driver: "afpacket", dev: "f0", refused: []struct{ caps, want string }{
			{"-all", "open nic f0 (afpacket): open packet socket: operation not permitted (needs CAP_NET_RAW); the process lacks CAP_NET_ADMIN, CAP_NET_RAW"},
			{"-all,+net_admin", "open nic f0 (afpacket): open packet socket: operation not permitted (needs CAP_NET_RAW); the process lacks CAP_NET_RAW:"},
			{"-all,+net_raw", "open nic f0 (afpacket): set interface up: operation not permitted (needs CAP_NET_ADMIN); the process lacks CAP_NET_ADMIN:"},
		}},
		{driver: "tap", dev: tapName, refused: []struct{ caps, want string }{
			{"-all,+net_raw", "open nic vtap0 (tap): create tap device: operation not permitted (needs CAP_NET_ADMIN); the process lacks CAP_NET_ADMIN:"},
		}},
	} {
		t.Run(tc.driver, func(t *testing.T) {
			tp := NewTopology(t, Options{Driver: tc.driver, Servers: []string{"web-a"}})
			tp.unprivilegedDirs()
			var wrap []string
			if tc.driver == "tap" {
				wrap = tunWrap(t, tp.dir)
			}
			cfg := tp.WriteConfig("caps.toml", tp.Config())

			// The kernel defaults, so that the test sees serve set them.
			if tc.driver == "afpacket" {
				must(t, "ip", "netns", "exec", tp.GatewayNS, "sysctl", "-q", "-w", "net.ipv4.conf.f0.arp_ignore=0", "net.ipv4.conf.f0.forwarding=1")
			}

			for _, r := range tc.refused {
				argv := append(append(append([]string{"netns", "exec", tp.GatewayNS}, wrap...), setpriv(r.caps)...), vipmuxBin, "serve", "--config", cfg)
				out, errOut, code := run(20*time.Second, nil, "ip", argv...)
				if code != 1 || !strings.Contains(errOut, r.want) {
					t.Errorf("serve as uid %d with caps %s: exit %d, stderr:\n%s\nwant exit 1 and an error containing %q", capsUID, r.caps, code, out+errOut, r.want)
				}
				if tc.driver == "afpacket" {
					if got := sysctl(t, tp.GatewayNS, "net.ipv4.conf.f0.arp_ignore"); got != "0" {
						t.Errorf("after a refused start with caps %s: f0 arp_ignore = %s, want 0 (unchanged)", r.caps, got)
					}
				} else if tp.linkExists(tp.GatewayNS, tapName) {
					t.Errorf("after a refused start with caps %s: %s exists, want no TAP device left behind", r.caps, tapName)
				}
			}
			if t.Failed() {
				return
			}

			tp.opts.Wrap = append(append([]string{}, wrap...), setpriv(need)...)
			g := tp.StartConfig(cfg)
			st := procStatus(t, g.proc.cmd.Process.Pid, "Name", "Uid", "Gid", "CapEff", "CapBnd", "CapAmb")
			wantUID := fmt.Sprintf("%d %d %d %d", capsUID, capsUID, capsUID, capsUID)
			wantGID := fmt.Sprintf("%d %d %d %d", capsGID, capsGID, capsGID, capsGID)
			if st["Name"] != "vipmux" || st["Uid"] != wantUID || st["Gid"] != wantGID ||
				st["CapEff"] != wantCapEff || st["CapBnd"] != wantCapEff || st["CapAmb"] != wantCapEff {
				t.Fatalf("gateway process: %v, want Name vipmux, Uid %s, Gid %s, CapEff/CapBnd/CapAmb %s (CAP_NET_ADMIN and CAP_NET_RAW only)",
					st, wantUID, wantGID, wantCapEff)
			}

			// Both start at 0 (afpacket: reset above; tap: a new device).
			key := "net.ipv4.conf." + tc.dev + ".arp_ignore"
			if got := sysctl(t, tp.GatewayNS, key); got != "8" {
				t.Errorf("%s = %s after an unprivileged serve, want 8 (serve sets it with CAP_NET_ADMIN)", key, got)
			}
			if tc.driver == "afpacket" {
				if got := sysctl(t, tp.GatewayNS, "net.ipv4.conf.f0.forwarding"); got != "0" {
					t.Errorf("net.ipv4.conf.f0.forwarding = %s after an unprivileged serve, want 0", got)
				}
			}
			if log := g.Log(); strings.Contains(log, "needs CAP_") {
				t.Errorf("unprivileged serve with CAP_NET_RAW and CAP_NET_ADMIN logged a missing capability:\n%s", log)
			}

			web := tp.Server("web-a")
			tp.Register("web-a", "198.18.0.10", web.IP)
			if got := tp.Get("http://198.18.0.10:8080/"); got != "web-a" {
				t.Errorf("client GET through the unprivileged gateway: %q, want web-a", got)
			}
			fi, err := os.Stat(filepath.Join(tp.dir, "state.json"))
			if err != nil {
				t.Fatalf("state file after register: %v", err)
			}
			if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != capsUID {
				t.Errorf("state file owner uid %d, want %d (written by the gateway)", uid, capsUID)
			}
		})
	}
}
