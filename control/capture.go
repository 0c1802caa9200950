package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/vipmux/vipmux/registry"
)

// PathCapture answers GET with the front NIC's frames in pcap format
// (application/vnd.tcpdump.pcap), streamed for the query's duration
// (default DefaultCaptureDuration, at most MaxCaptureDuration) or until
// the client goes away. Query parameters: duration (a Go duration such
// as "10s"), filter (see nic.ParseFilter: a subset of tcpdump's syntax),
// snaplen (1..65536). It needs the token.
const PathCapture = "/v1/capture"

// Capture durations.
const (
	// DefaultCaptureDuration is a capture's duration when the request
	// gives none.
	DefaultCaptureDuration = 10 * time.Second
	// MaxCaptureDuration is the longest capture the API streams.
	MaxCaptureDuration = time.Hour
	// maxSnapLen is the largest snaplen accepted (nic.DefaultSnapLen).
	maxSnapLen = 65536
)

// Capturer copies the front NIC's frames to a pcap stream; the gateway
// implements it with nic.Capture. Capture writes the pcap file header to
// w at once and then every frame that filter takes, cut to snapLen bytes
// (0: the default), until the Recording is stopped. A bad filter is an
// error that satisfies errors.Is(err, registry.ErrInvalid), naming the
// field "filter".
type Capturer interface {
	Capture(w io.Writer, snapLen int, filter string) (Recording, error)
}

// Recording is a running capture. If it also has a method Done()
// <-chan struct{}, the capture ends when that channel is closed (the
// gateway stops) rather than holding up the server's shutdown.
type Recording interface {
	// Stop ends it: nothing is written to its writer after Stop returns,
	// and what was buffered has been.
	Stop() error
	// Frames is how many frames it recorded.
	Frames() uint64
}

// CaptureRequest are the parameters of GET /v1/capture.
type CaptureRequest struct {
	// Duration is how long to capture; 0 means DefaultCaptureDuration.
	Duration time.Duration
	// Filter selects frames (nic.ParseFilter); empty takes all.
	Filter string
	// SnapLen cuts frames; 0 means the gateway's default (65536).
	SnapLen int
}

// captureRoute is the route of PathCapture for capturer.
func (s *server) captureRoute(capturer Capturer) route {
	return route{method: http.MethodGet, fn: func(w http.ResponseWriter, r *http.Request) error {
		return s.capture(w, r, capturer)
	}}
}

// capture serves PathCapture.
func (s *server) capture(w http.ResponseWriter, r *http.Request, capturer Capturer) error {
	q := r.URL.Query()
	d := DefaultCaptureDuration
	if v := q.Get("duration"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			return registry.Invalid("duration", "%q: write a duration such as \"10s\"", v)
		}
		if d <= 0 || d > MaxCaptureDuration {
			return registry.Invalid("duration", "%v is outside (0, %v]", d, MaxCaptureDuration)
		}
	}
	snapLen := 0
	if v := q.Get("snaplen"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxSnapLen {
			return registry.Invalid("snaplen", "%q: want 1..%d", v, maxSnapLen)
		}
		snapLen = n
	}
	rc := http.NewResponseController(w)
	// The server's write timeout is for small answers; this one lasts
	// the capture.
	// (A writer without deadlines, as in tests, has nothing to extend.)
	if err := rc.SetWriteDeadline(time.Now().Add(d + 10*time.Second)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return fmt.Errorf("capture: extend the write deadline: %w", err)
	}
	h := w.Header()
	h.Set("Content-Type", "application/vnd.tcpdump.pcap")
	h.Set("Content-Disposition", `attachment; filename="front.pcap"`)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	rec, err := capturer.Capture(flushWriter{w: w, rc: rc}, snapLen, q.Get("filter"))
	if err != nil {
		h.Del("Content-Disposition")
		return err
	}
	s.log.Info("capture started", "duration", d.String(), "filter", q.Get("filter"), "remote", r.RemoteAddr)
	t := time.NewTimer(d)
	defer t.Stop()
	var ended <-chan struct{}
	if e, ok := rec.(interface{ Done() <-chan struct{} }); ok {
		ended = e.Done()
	}
	select {
	case <-t.C:
	case <-r.Context().Done(): // the client went away
	case <-ended: // the gateway stops
	}
	err = rec.Stop()
	s.log.Info("capture ended", "frames", rec.Frames(), "remote", r.RemoteAddr, "err", err)
	return nil // the answer has begun: an error can no longer be sent
}

// flushWriter sends each write to the client at once: the recording
// buffers frames itself and writes them out at most 200 ms after they
// crossed.
type flushWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		err = f.rc.Flush()
	}
	return n, err
}

// Capture streams the gateway's front NIC frames in pcap format to w
// (GET /v1/capture) until req.Duration has passed; ctx may end it
// sooner. It returns the number of bytes written. A refused request is
// an *APIError. Without Client.HTTP, the request has no time limit but
// ctx and the duration.
func (c *Client) Capture(ctx context.Context, req CaptureRequest, w io.Writer) (int64, error) {
	if c.BaseURL == "" {
		return 0, errors.New("control: no gateway URL (Client.BaseURL) given")
	}
	q := url.Values{}
	if req.Duration != 0 {
		q.Set("duration", req.Duration.String())
	}
	if req.Filter != "" {
		q.Set("filter", req.Filter)
	}
	if req.SnapLen != 0 {
		q.Set("snaplen", strconv.Itoa(req.SnapLen))
	}
	u := strings.TrimRight(c.BaseURL, "/") + PathCapture
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, fmt.Errorf("control: gateway URL %q: %w", c.BaseURL, err)
	}
	if c.Token != "" {
		hreq.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{} // the capture lasts its duration: no overall timeout
	}
	resp, err := hc.Do(hreq)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, fmt.Errorf("control: cannot reach gateway at %s: %w", c.BaseURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if e := apiError(resp.StatusCode, data); e != nil {
			return 0, e
		}
		return 0, notGateway(resp, data, u)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/vnd.tcpdump.pcap" {
		return 0, notGateway(resp, nil, u)
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("control: capture from %s: %w", u, err)
	}
	return n, nil
}
