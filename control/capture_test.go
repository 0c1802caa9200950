package control

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vipmux/vipmux/registry"
)

// fakeCapturer writes "HDR" at once and "F" per frame that the test
// sends, as long as the recording runs.
type fakeCapturer struct {
	mu      sync.Mutex
	rec     *fakeRecording
	snapLen int
	filter  string
}

type fakeRecording struct {
	mu      sync.Mutex
	w       io.Writer
	stopped bool
	frames  uint64
}

func (f *fakeCapturer) Capture(w io.Writer, snapLen int, filter string) (Recording, error) {
	if filter == "bad" {
		return nil, registry.Invalid("filter", "unknown term %q", filter)
	}
	if _, err := w.Write([]byte("HDR")); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rec, f.snapLen, f.filter = &fakeRecording{w: w}, snapLen, filter
	return f.rec, nil
}

// frame records one frame if a recording runs.
func (f *fakeCapturer) frame() bool {
	f.mu.Lock()
	r := f.rec
	f.mu.Unlock()
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return false
	}
	r.frames++
	r.w.Write([]byte("F"))
	return true
}

func (r *fakeRecording) Stop() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	return nil
}

func (r *fakeRecording) Frames() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.frames
}

func TestCaptureRequests(t *testing.T) {
	tests := []struct {
		name      string
		query     string
		token     string
		wantCode  int
		wantField string
	}{
		{name: "no token", query: "", wantCode: 401},
		{name: "bad duration", query: "?duration=5", token: testToken, wantCode: 400, wantField: "duration"},
		{name: "negative duration", query: "?duration=-1s", token: testToken, wantCode: 400, wantField: "duration"},
		{name: "too long", query: "?duration=2h", token: testToken, wantCode: 400, wantField: "duration"},
		{name: "bad snaplen", query: "?snaplen=0", token: testToken, wantCode: 400, wantField: "snaplen"},
		{name: "bad filter", query: "?filter=bad", token: testToken, wantCode: 400, wantField: "filter"},
		{name: "short capture", query: "?duration=10ms&snaplen=96&filter=tcp", token: testToken, wantCode: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fc := &fakeCapturer{}
			h, _ := testHandler(t, func(o *Options) { o.Token = testToken; o.Capture = fc })
			rec := do(h, http.MethodGet, PathCapture+tc.query, "", tc.token)
			if rec.Code != tc.wantCode {
				t.Fatalf("GET %s%s = %d %s, want %d", PathCapture, tc.query, rec.Code, rec.Body, tc.wantCode)
			}
			if tc.wantField != "" {
				checkErrorBody(t, rec, tc.wantField)
			}
			if tc.wantCode == 200 {
				if ct := rec.Header().Get("Content-Type"); ct != "application/vnd.tcpdump.pcap" || rec.Body.String() != "HDR" {
					t.Errorf("GET %s%s: Content-Type %q body %q, want the pcap type and HDR", PathCapture, tc.query, ct, rec.Body)
				}
				if fc.snapLen != 96 || fc.filter != "tcp" || !fc.rec.stopped {
					t.Errorf("capturer got snaplen %d filter %q, stopped %v; want 96, tcp, true", fc.snapLen, fc.filter, fc.rec.stopped)
				}
			}
		})
	}
	h, _ := testHandler(t, nil)
	if rec := do(h, http.MethodGet, PathCapture, "", ""); rec.Code != 404 {
		t.Errorf("GET %s without Options.Capture = %d, want 404", PathCapture, rec.Code)
	}
}

// TestClientCapture streams a capture through a real server: frames sent
// while it runs arrive, the client's context ends it early, and the
// recording is stopped.
func TestClientCapture(t *testing.T) {
	fc := &fakeCapturer{}
	h, _ := testHandler(t, func(o *Options) { o.Token = testToken; o.Capture = fc })
	srv := httptest.NewServer(h)
	defer srv.Close()
	cl := &Client{BaseURL: srv.URL, Token: testToken}

	ctx, cancel := context.WithCancel(context.Background())
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() {
		_, err := cl.Capture(ctx, CaptureRequest{Duration: time.Minute}, &out)
		done <- err
	}()
	// Frames once the recording runs; the client sees each flushed.
	deadline := time.Now().Add(5 * time.Second)
	for sent := 0; sent < 3; {
		if fc.frame() {
			sent++
		}
		if time.Now().After(deadline) {
			t.Fatalf("the capture never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Capture after cancel: %v, want context.Canceled", err)
	}
	if got := out.String(); got != "HDRFFF" {
		t.Errorf("captured %q, want HDRFFF", got)
	}
	for deadline := time.Now().Add(5 * time.Second); !fc.rec.stoppedNow() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if !fc.rec.stoppedNow() {
		t.Errorf("the recording still runs after the client went away")
	}

	_, err = (&Client{BaseURL: srv.URL}).Capture(context.Background(), CaptureRequest{}, io.Discard)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != 401 {
		t.Errorf("Capture without the token: %v, want a 401 APIError", err)
	}
	_, err = cl.Capture(context.Background(), CaptureRequest{Filter: "bad"}, io.Discard)
	if !errors.As(err, &ae) || ae.Code != 400 || ae.Field != "filter" {
		t.Errorf("Capture with a bad filter: %v, want a 400 APIError naming filter", err)
	}
}

func (r *fakeRecording) stoppedNow() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopped
}

func TestPprof(t *testing.T) {
	h, _ := testHandler(t, func(o *Options) { o.Token = testToken })
	for _, tc := range []struct {
		path, token, want string
		code              int
	}{
		{path: PathPprof, token: "", code: 401},
		{path: PathPprof + "heap", token: "", code: 401},
		{path: PathPprof, token: testToken, code: 200, want: "goroutine"},
		{path: PathPprof + "goroutine?debug=1", token: testToken, code: 200, want: "goroutine profile:"},
		{path: PathPprof + "cmdline", token: testToken, code: 200},
		{path: PathPprof + "nosuch", token: testToken, code: 404},
	} {
		rec := do(h, http.MethodGet, tc.path, "", tc.token)
		if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.want) {
			t.Errorf("GET %s (token %q) = %d %.80q, want %d containing %q", tc.path, tc.token, rec.Code, rec.Body, tc.code, tc.want)
		}
	}
}
