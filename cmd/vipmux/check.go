package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/vipmux/vipmux/config"
	"github.com/vipmux/vipmux/control"
	"github.com/vipmux/vipmux/registry"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// defaultConfig is the config file that serve, check and the client
// commands read when neither --config nor $VIPMUX_CONFIG names one.
const defaultConfig = "/etc/vipmux/vipmux.toml"

func checkCommand() *cli.Command {
	return &cli.Command{
		Name:  "check",
		Usage: "check a config file and what it names without starting the gateway (like haproxy -c, nginx -t)",
		Description: `Checks everything that serve would check at start-up, short of taking the
front NIC: the config parses and validates (every problem, each naming its
key); the state file, if there is one, reads and restores into the config's
networks; the token file reads; the front interface exists (afpacket) or its
name is free (tap); the control and metrics listen addresses can be bound.
It changes nothing and needs no privileges. Exits 0 when serve would start
with this config, 1 with every error otherwise.

Warnings do not fail the check. They are for what depends on who runs
serve: the capabilities CAP_NET_RAW and CAP_NET_ADMIN, a state directory
that this user cannot write, a port that is in use (by the running gateway,
when the check runs before a reload), an interface with kernel addresses.
The systemd unit runs it as the service's user before every start and every
reload (ExecStartPre=, ExecReload=), so that a bad file keeps the running
gateway as it is and makes systemctl fail with the reason.

Examples:
   vipmux check --config /etc/vipmux/vipmux.toml
   vipmux check -c ./vipmux.toml --quiet && systemctl reload vipmux`,
		Flags: []cli.Flag{
			&cli.PathFlag{Name: "config", Aliases: []string{"c"}, Usage: "TOML config `FILE` to check (default: $VIPMUX_CONFIG, else " + defaultConfig + ")"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print errors and warnings only"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageErrorf(c, "unexpected argument %q", c.Args().First())
			}
			path, _ := configPath(c)
			r := checkConfig(path)
			r.print(c.App.Writer, c.App.ErrWriter, c.Bool("quiet"))
			if n := len(r.errors()); n > 0 {
				return fmt.Errorf("check %s: %d %s: serve would not start with this config", path, n, plural(n, "error", "errors"))
			}
			fmt.Fprintf(c.App.Writer, "%s: configuration is valid\n", path)
			return nil
		},
	}
}

// severity ranks a finding of check.
type severity int

const (
	sevOK severity = iota
	sevWarning
	sevError
)

func (s severity) String() string {
	switch s {
	case sevWarning:
		return "warning"
	case sevError:
		return "error"
	}
	return "ok"
}

// finding is one line of check's report: what was checked (a config key
// or the file), and the outcome.
type finding struct {
	sev  severity
	what string
	msg  string
}

// checkReport is every finding of one check, in order.
type checkReport []finding

func (r *checkReport) add(sev severity, what, format string, args ...any) {
	*r = append(*r, finding{sev: sev, what: what, msg: fmt.Sprintf(format, args...)})
}

// errors returns the findings of severity error.
func (r checkReport) errors() []finding {
	var es []finding
	for _, f := range r {
		if f.sev == sevError {
			es = append(es, f)
		}
	}
	return es
}

// print writes ok lines (unless quiet) and warnings to out, errors to
// errOut, one per line: "error    nic.interface: ...".
func (r checkReport) print(out, errOut io.Writer, quiet bool) {
	for _, f := range r {
		w := out
		switch {
		case f.sev == sevError:
			w = errOut
		case f.sev == sevOK && quiet:
			continue
		}
		fmt.Fprintf(w, "%-8s %s: %s\n", f.sev, f.what, f.msg)
	}
}

// checkConfig checks the config file at path and what it names, changing
// nothing: the report lists every problem.
func checkConfig(path string) checkReport {
	var r checkReport
	data, err := os.ReadFile(path)
	if err != nil {
		r.add(sevError, "config", "%v", err)
		return r
	}
	cfg, err := config.Parse(data)
	if err != nil {
		for _, e := range flattenErrors(err) {
			r.add(sevError, "config "+path, "%v", e)
		}
		r.add(sevWarning, "config "+path, "the state file, token file, interface and listen addresses are checked once the config is valid")
		return r
	}
	r.add(sevOK, "config "+path, "parses and validates (nic.driver %s, nic.interface %s, %d %s)", cfg.NIC.Driver, cfg.NIC.Interface, len(cfg.NIC.Networks), plural(len(cfg.NIC.Networks), "network", "networks"))
	checkState(&r, cfg)
	checkToken(&r, cfg.Control.TokenFile)
	checkTLS(&r, cfg.Control)
	checkInterface(&r, cfg.NIC)
	checkListen(&r, "control.listen", cfg.Control.Listen)
	if cfg.Metrics.Listen != "" {
		checkListen(&r, "metrics.listen", cfg.Metrics.Listen)
	}
	checkCaps(&r)
	return r
}

// flattenErrors returns the leaves of err's tree of joined errors: one per
// problem that config.Parse found.
func flattenErrors(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var es []error
		for _, e := range j.Unwrap() {
			es = append(es, flattenErrors(e)...)
		}
		return es
	}
	return []error{err}
}

// checkState restores the state file (snapshot and journal) the way serve
// does, into a registry that saves nothing, so that a corrupt file or a
// binding outside nic.networks is found before start; and warns when this
// user could not write the state directory.
func checkState(r *checkReport, cfg *config.Config) {
	const key = "state.path"
	p := cfg.State.Path
	if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
		r.add(sevOK, key, "%s does not exist yet: the table starts empty", p)
	} else {
		shared := cfg.Shared.Address
		reg, err := registry.New(registry.Options{Networks: cfg.NIC.Networks, Store: &registry.FileStore{Path: p}, FrontAddr: func(a netip.Addr) bool { return a == shared }})
		if err != nil {
			r.add(sevError, key, "%s: %v; serve refuses to start: repair it, or start serve once with --reset-state to move it aside", p, err)
		} else {
			n := reg.Table().Len()
			r.add(sevOK, key, "%s restores %d %s", p, n, plural(n, "binding", "bindings"))
		}
	}
	// Serve creates missing directories; the nearest existing one must
	// be writable by serve's user.
	dir := filepath.Dir(p)
	for {
		if _, err := os.Stat(dir); err == nil || dir == filepath.Dir(dir) {
			break
		}
		dir = filepath.Dir(dir)
	}
	if err := unix.Access(dir, unix.W_OK); err != nil {
		r.add(sevWarning, key, "directory %s is not writable by uid %d (%v): serve, run as this user, could not save the table", dir, os.Getuid(), err)
	}
}

// checkToken reads control.token_file as serve does.
func checkToken(r *checkReport, path string) {
	const key = "control.token_file"
	if path == "" {
		r.add(sevWarning, key, "not set: the control API takes requests without a token (keep [control] listen on loopback or a trusted network)")
		return
	}
	if _, err := control.ReadTokenFile(path); err != nil {
		r.add(sevError, key, "%s: %v", path, err)
		return
	}
	r.add(sevOK, key, "%s holds a token", path)
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		r.add(sevWarning, key, "%s has mode %04o: others may read the token; chmod 0600 it", path, fi.Mode().Perm())
	}
}

// checkTLS loads the control API's certificate and key as serve does,
// and warns of a certificate that has expired or is not valid yet.
func checkTLS(r *checkReport, c config.Control) {
	const key = "control.tls_cert"
	if c.TLSCert == "" {
		return
	}
	pair, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		r.add(sevError, key, "load %s and control.tls_key %s: %v", c.TLSCert, c.TLSKey, err)
		return
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		r.add(sevError, key, "%s: %v", c.TLSCert, err)
		return
	}
	r.add(sevOK, key, "%s and its key load (subject %s, valid until %s): the API speaks HTTPS", c.TLSCert, cert.Subject, cert.NotAfter.UTC().Format("2006-01-02"))
	if now := time.Now(); now.After(cert.NotAfter) || now.Before(cert.NotBefore) {
		r.add(sevWarning, key, "%s is valid from %s to %s only: clients refuse it now", c.TLSCert, cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339))
	}
}

// checkInterface looks the front interface up without privileges: for
// afpacket it must exist and be Ethernet; for tap the name must be free,
// since serve creates the device.
func checkInterface(r *checkReport, n config.NIC) {
	const key = "nic.interface"
	link, err := netlink.LinkByName(n.Interface)
	var notFound netlink.LinkNotFoundError
	if err != nil && !errors.As(err, &notFound) {
		r.add(sevWarning, key, "%s: cannot look it up (%v)", n.Interface, err)
		return
	}
	switch n.Driver {
	case "afpacket":
		if link == nil {
			r.add(sevError, key, "%s: no such interface in this network namespace (ip link lists them); afpacket takes over an existing interface", n.Interface)
			return
		}
		a := link.Attrs()
		if len(a.HardwareAddr) != 6 && n.MAC == nil {
			r.add(sevError, key, "%s has no Ethernet address (%q): afpacket needs an Ethernet interface", n.Interface, a.HardwareAddr)
			return
		}
		r.add(sevOK, key, "%s exists (%s, %s, MTU %d)", n.Interface, link.Type(), a.HardwareAddr, a.MTU)
		if n.MTU > a.MTU {
			r.add(sevWarning, "nic.mtu", "%d is larger than %s's MTU %d: frames that large do not fit the link", n.MTU, n.Interface, a.MTU)
		}
		if addrs, err := netlink.AddrList(link, netlink.FAMILY_V4); err == nil && len(addrs) > 0 {
			var ss []string
			for _, ad := range addrs {
				ss = append(ss, ad.IPNet.String())
			}
			r.add(sevWarning, key, "%s has kernel IPv4 addresses (%s): the kernel may answer for them beside vipmux; the front interface should have none", n.Interface, strings.Join(ss, ", "))
		}
	case "tap":
		switch {
		case link == nil:
			r.add(sevOK, key, "%s is free: serve creates the tap device", n.Interface)
		case link.Type() == "tuntap":
			r.add(sevWarning, key, "tap device %s exists already: a running gateway's (before a reload), or serve cannot create it", n.Interface)
		default:
			r.add(sevError, key, "an interface named %s (%s) exists already; serve creates the tap device: choose another name", n.Interface, link.Type())
		}
	}
}

// checkListen binds addr for a moment: an address that is not on this
// host, or a port that this user may not bind, is an error; a port in use
// is a warning, since before a reload the running gateway holds it.
func checkListen(r *checkReport, key, addr string) {
	ln, err := net.Listen("tcp", addr)
	switch {
	case err == nil:
		ln.Close()
		r.add(sevOK, key, "%s can be bound", addr)
	case errors.Is(err, syscall.EADDRINUSE):
		r.add(sevWarning, key, "%s is in use: by the running gateway (before a reload), or serve cannot listen there", addr)
	default:
		r.add(sevError, key, "%s cannot be bound: %v", addr, unwrapOp(err))
	}
}

// unwrapOp drops net.OpError's repetition of the operation and address.
func unwrapOp(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe.Err
	}
	return err
}

// checkCaps warns when this process lacks a capability that serve needs.
func checkCaps(r *checkReport) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return
	}
	var missing []string
	for _, c := range []struct {
		name string
		bit  uint
	}{{"CAP_NET_ADMIN", unix.CAP_NET_ADMIN}, {"CAP_NET_RAW", unix.CAP_NET_RAW}} {
		if data[c.bit/32].Effective&(1<<(c.bit%32)) == 0 {
			missing = append(missing, c.name)
		}
	}
	if len(missing) > 0 {
		r.add(sevWarning, "capabilities", "this process (uid %d) lacks %s, which serve needs: the systemd unit grants them (AmbientCapabilities=)", os.Getuid(), strings.Join(missing, " and "))
	}
}

// plural returns one or many by n.
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
