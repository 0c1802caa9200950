// Package sdnotify tells systemd how a service is doing, as sd_notify(3)
// does: one datagram of newline-separated VAR=VALUE lines to the unix
// socket that $NOTIFY_SOCKET names (a path, or an abstract socket when it
// starts with @). It owns no goroutine and keeps no state but the socket's
// address.
//
// It is written here rather than taken from
// github.com/coreos/go-systemd/v22/daemon: the protocol is one sendto, and
// the service also needs MONOTONIC_USEC (Type=notify-reload), which that
// package leaves to the caller anyway.
//
//	n := sdnotify.FromEnv()
//	n.Ready("serving")           // READY=1 once everything is up
//	done := n.Reloading()        // RELOADING=1 + MONOTONIC_USEC=...
//	done("reloaded")             // READY=1
//	n.Stopping()                 // STOPPING=1
//
// Outside systemd ($NOTIFY_SOCKET unset) every method does nothing.
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Env is the environment variable that names systemd's socket.
const Env = "NOTIFY_SOCKET"

// Notifier sends state to one notification socket. The zero Notifier and
// a nil *Notifier send nothing. It is safe for concurrent use.
type Notifier struct {
	addr *net.UnixAddr
	// socket is $NOTIFY_SOCKET as given, for error messages.
	socket string
}

// FromEnv returns the Notifier of $NOTIFY_SOCKET; it sends nothing when
// the variable is unset.
func FromEnv() *Notifier { return New(os.Getenv(Env)) }

// New returns a Notifier that sends to socket: a file system path, or an
// abstract socket's name after @. An empty socket sends nothing.
func New(socket string) *Notifier {
	if socket == "" {
		return &Notifier{}
	}
	name := socket
	if strings.HasPrefix(name, "@") {
		// Go spells an abstract socket with a leading NUL byte ("@" in
		// net's own String form): the kernel's form.
		name = "\x00" + name[1:]
	}
	return &Notifier{addr: &net.UnixAddr{Name: name, Net: "unixgram"}, socket: socket}
}

// Enabled reports whether n sends anywhere.
func (n *Notifier) Enabled() bool { return n != nil && n.addr != nil }

// Send sends lines (VAR=VALUE each, without newlines) as one datagram.
// Without a socket it returns nil.
func (n *Notifier) Send(lines ...string) error {
	if !n.Enabled() {
		return nil
	}
	for _, l := range lines {
		if strings.ContainsRune(l, '\n') || !strings.Contains(l, "=") {
			return fmt.Errorf("sd_notify: %q is not one VAR=VALUE line", l)
		}
	}
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sd_notify to %s: %w", n.socket, err)
	}
	defer c.Close()
	msg := strings.Join(lines, "\n") + "\n"
	if _, err := c.Write([]byte(msg)); err != nil {
		return fmt.Errorf("sd_notify to %s: %w", n.socket, err)
	}
	return nil
}

// Ready sends READY=1 with status as STATUS= (omitted when empty).
func (n *Notifier) Ready(status string) error {
	return n.Send(withStatus([]string{"READY=1"}, status)...)
}

// Reloading sends RELOADING=1 with MONOTONIC_USEC= (CLOCK_MONOTONIC in
// microseconds, which systemd requires with RELOADING=1 for
// Type=notify-reload), and returns the function that ends the reload: it
// sends READY=1 with status. A reload that was refused ends the same way
// (the service runs on, with the configuration it had); its status says
// so.
func (n *Notifier) Reloading() (done func(status string) error, err error) {
	done = func(status string) error { return n.Ready(status) }
	if !n.Enabled() {
		return done, nil
	}
	usec, err := monotonicUsec()
	if err != nil {
		return done, err
	}
	return done, n.Send("RELOADING=1", fmt.Sprintf("MONOTONIC_USEC=%d", usec))
}

// Stopping sends STOPPING=1 with status.
func (n *Notifier) Stopping(status string) error {
	return n.Send(withStatus([]string{"STOPPING=1"}, status)...)
}

// withStatus appends STATUS=status to lines unless status is empty; a
// status of several lines keeps the first.
func withStatus(lines []string, status string) []string {
	if status == "" {
		return lines
	}
	status, _, _ = strings.Cut(status, "\n")
	return append(lines, "STATUS="+status)
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, the clock that
// systemd compares MONOTONIC_USEC with.
func monotonicUsec() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("sd_notify: CLOCK_MONOTONIC: %w", err)
	}
	return uint64(ts.Sec)*1e6 + uint64(ts.Nsec)/1e3, nil
}
