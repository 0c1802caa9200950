package gateway_test

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vipmux/vipmux/control"
)

// TestGatewayCapture: GET /v1/capture records the front link's frames
// while the gateway runs, beside the --pcap recording that newEnv starts,
// with the filter applied; a bad filter is a 400 naming it.
func TestGatewayCapture(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	backend := namedEcho(t, "127.0.0.1", "web-a")
	if _, err := e.api.Register(ctx, control.RegisterRequest{Name: "web-a", IP: vip.String(), Backend: backend.String()}); err != nil {
		t.Fatalf("Register(web-a on %s): %v", vip, err)
	}

	_, err := e.api.Capture(ctx, control.CaptureRequest{Filter: "tcp or arp"}, &bytes.Buffer{})
	var ae *control.APIError
	if !errors.As(err, &ae) || ae.Code != 400 || ae.Field != "filter" {
		t.Errorf("Capture with filter \"tcp or arp\": %v, want a 400 naming filter", err)
	}

	var out lockedBuffer
	done := make(chan error, 1)
	go func() {
		_, err := e.api.Capture(ctx, control.CaptureRequest{Duration: 2 * time.Second, Filter: "tcp and port 8443"}, &out)
		done <- err
	}()
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(e.log.String(), "capture started"); {
		if time.Now().After(deadline) {
			t.Fatalf("the capture did not start within 5 s; log:\n%s", e.log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	const msg = "captured-while-running"
	if name, got := e.exchange(t, netip.AddrPortFrom(vip, 8443), msg); name != "web-a" || got != msg {
		t.Fatalf("exchange with %s:8443 = %q, %q; want web-a and the message back", vip, name, got)
	}
	e.exchange(t, netip.AddrPortFrom(vip, 80), "not-this-port")
	if err := <-done; err != nil {
		t.Fatalf("Capture: %v", err)
	}
	got := []byte(out.String())
	if len(got) < 24 || !bytes.Equal(got[:4], []byte{0xd4, 0xc3, 0xb2, 0xa1}) {
		t.Fatalf("capture of %d bytes does not start with a pcap header: %.32x", len(got), got)
	}
	if !bytes.Contains(got, []byte(msg)) {
		t.Errorf("capture does not hold the bytes proxied while it ran")
	}
	if bytes.Contains(got, []byte("not-this-port")) {
		t.Errorf("capture with filter \"tcp and port 8443\" holds a connection to port 80")
	}

	// A capture that runs when the gateway closes ends with it: the
	// client gets what was recorded, and Close does not wait for the
	// capture's hour.
	var last lockedBuffer
	go func() {
		_, err := e.api.Capture(ctx, control.CaptureRequest{Duration: time.Hour}, &last)
		done <- err
	}()
	for deadline := time.Now().Add(5 * time.Second); strings.Count(e.log.String(), "capture started") < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("the second capture did not start within 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := e.gw.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Capture ended by Close: %v, want nil", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("a capture still runs 20 s after Close returned")
	}
	if got := last.String(); len(got) < 24 {
		t.Errorf("capture ended by Close holds %d bytes, want the pcap header at least", len(got))
	}
}
