package sdnotify

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// listen opens a notification socket like systemd's: a path in a
// temporary directory, or an abstract socket.
func listen(t *testing.T, abstract bool) (socket string, c *net.UnixConn) {
	t.Helper()
	socket = filepath.Join(t.TempDir(), "notify.sock")
	name := socket
	if abstract {
		socket = fmt.Sprintf("@vipmux-sdnotify-test-%d-%d", time.Now().UnixNano(), len(t.Name()))
		name = "\x00" + socket[1:]
	}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen on %s: %v", socket, err)
	}
	t.Cleanup(func() { c.Close() })
	return socket, c
}

// recv reads one datagram as its lines.
func recv(t *testing.T, c *net.UnixConn) []string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read notification: %v", err)
	}
	msg := string(buf[:n])
	if !strings.HasSuffix(msg, "\n") {
		t.Errorf("notification %q does not end in a newline", msg)
	}
	return strings.Split(strings.TrimSuffix(msg, "\n"), "\n")
}

func TestNotifier(t *testing.T) {
	for _, tc := range []struct {
		name     string
		abstract bool
	}{
		{"path", false},
		{"abstract", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			socket, c := listen(t, tc.abstract)
			n := New(socket)
			if !n.Enabled() {
				t.Fatalf("New(%q).Enabled() = false, want true", socket)
			}
			if err := n.Ready("serving"); err != nil {
				t.Fatalf("Ready: %v", err)
			}
			if diff := cmp.Diff([]string{"READY=1", "STATUS=serving"}, recv(t, c)); diff != "" {
				t.Errorf("Ready (-want +got):\n%s", diff)
			}
			done, err := n.Reloading()
			if err != nil {
				t.Fatalf("Reloading: %v", err)
			}
			got := recv(t, c)
			if len(got) != 2 || got[0] != "RELOADING=1" || !strings.HasPrefix(got[1], "MONOTONIC_USEC=") {
				t.Fatalf("Reloading sent %q, want RELOADING=1 and MONOTONIC_USEC=", got)
			}
			if usec, err := strconv.ParseUint(strings.TrimPrefix(got[1], "MONOTONIC_USEC="), 10, 64); err != nil || usec == 0 {
				t.Errorf("MONOTONIC_USEC %q: %v, want a positive integer", got[1], err)
			}
			if err := done("reload refused: bad\nsecond line"); err != nil {
				t.Fatalf("done: %v", err)
			}
			if diff := cmp.Diff([]string{"READY=1", "STATUS=reload refused: bad"}, recv(t, c)); diff != "" {
				t.Errorf("end of reload (-want +got):\n%s", diff)
			}
			if err := n.Stopping(""); err != nil {
				t.Fatalf("Stopping: %v", err)
			}
			if diff := cmp.Diff([]string{"STOPPING=1"}, recv(t, c)); diff != "" {
				t.Errorf("Stopping (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNotifierErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		socket  string
		lines   []string
		wantErr string
	}{
		{name: "no socket sends nothing", socket: "", lines: []string{"READY=1"}},
		{name: "missing socket", socket: filepath.Join(t.TempDir(), "absent"), lines: []string{"READY=1"}, wantErr: "sd_notify to "},
		{name: "newline in a line", socket: "@x", lines: []string{"STATUS=a\nREADY=1"}, wantErr: "is not one VAR=VALUE line"},
		{name: "no equals sign", socket: "@x", lines: []string{"READY"}, wantErr: "is not one VAR=VALUE line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := New(tc.socket).Send(tc.lines...)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Send(%q) to %q = %v, want nil", tc.lines, tc.socket, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("Send(%q) to %q = %v, want an error containing %q", tc.lines, tc.socket, err, tc.wantErr)
			}
		})
	}
	var nilN *Notifier
	if err := nilN.Ready("x"); err != nil || nilN.Enabled() {
		t.Errorf("nil Notifier: Ready = %v, Enabled = %v; want nil, false", err, nilN.Enabled())
	}
}
