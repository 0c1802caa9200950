package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client calls a gateway's control API. Its zero value is not usable: set
// BaseURL. A Client is safe for concurrent use.
type Client struct {
	// BaseURL is the gateway's control address, e.g. "http://198.19.0.1:7070".
	BaseURL string
	// Token is sent as "Authorization: Bearer <Token>" when not empty.
	Token string
	// HTTP is the client to use; nil means one with a 10 s timeout.
	HTTP *http.Client
}

// defaultHTTP is the client used when Client.HTTP is nil.
var defaultHTTP = &http.Client{Timeout: 10 * time.Second}

// ErrNotGateway is wrapped by the error of a call that something other
// than a vipmux gateway answered (a web server, a proxy's error page): the
// answer was not the control API's JSON.
var ErrNotGateway = errors.New("not a vipmux gateway")

// maxResponseBody bounds how much of an answer the client reads.
const maxResponseBody = 32 << 20

// APIError is a non-2xx answer from the gateway.
type APIError struct {
	// Code is the HTTP status code.
	Code int
	// Message is the gateway's explanation.
	Message string
	// Field is the request field at fault, or empty.
	Field string
}

// Error formats the error as "409 Conflict: message", or with the field,
// "400 Bad Request: ip: message".
func (e *APIError) Error() string {
	status := fmt.Sprintf("%d %s", e.Code, http.StatusText(e.Code))
	if http.StatusText(e.Code) == "" {
		status = fmt.Sprintf("%d", e.Code)
	}
	switch {
	case e.Message == "" && e.Field == "":
		return status
	case e.Field == "":
		return status + ": " + e.Message
	}
	return status + ": " + e.Field + ": " + e.Message
}

// Register adds or updates a member (POST /v1/register) and returns the
// binding as it now stands.
func (c *Client) Register(ctx context.Context, req RegisterRequest) (BindingView, error) {
	var b BindingView
	err := c.do(ctx, http.MethodPost, PathRegister, req, &b)
	return b, err
}

// RegisterBatch applies many registrations as one change (POST
// /v1/register/batch): all of them or, on an *APIError whose Field is
// "registrations[INDEX].FIELD", none.
func (c *Client) RegisterBatch(ctx context.Context, req RegisterBatchRequest) (RegisterBatchResult, error) {
	var res RegisterBatchResult
	err := c.do(ctx, http.MethodPost, PathRegisterBatch, req, &res)
	return res, err
}

// Deregister removes a member from a binding (POST /v1/deregister).
func (c *Client) Deregister(ctx context.Context, req DeregisterRequest) error {
	return c.do(ctx, http.MethodPost, PathDeregister, req, &okBody{})
}

// Switch makes req.To the active member of a binding (POST /v1/switch) and
// returns the binding as it now stands.
func (c *Client) Switch(ctx context.Context, req SwitchRequest) (BindingView, error) {
	var b BindingView
	err := c.do(ctx, http.MethodPost, PathSwitch, req, &b)
	return b, err
}

// Renew extends a member's lease (POST /v1/renew) and returns the binding
// as it now stands. A 404 *APIError means the lease was lost (it expired
// and the member was removed, or someone deregistered it): register again.
func (c *Client) Renew(ctx context.Context, req RenewRequest) (BindingView, error) {
	var b BindingView
	err := c.do(ctx, http.MethodPost, PathRenew, req, &b)
	return b, err
}

// Reload asks the gateway to re-read its config file (POST /v1/reload)
// and returns the keys that changed. A 400 *APIError means the file is
// bad, a 409 that it changes a key that cannot change while the gateway
// runs; the gateway then keeps its configuration as it was.
func (c *Client) Reload(ctx context.Context) (ReloadResult, error) {
	var res ReloadResult
	err := c.do(ctx, http.MethodPost, PathReload, struct{}{}, &res)
	return res, err
}

// Status returns every binding (GET /v1/status).
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.do(ctx, http.MethodGet, PathStatus, nil, &st)
	return st, err
}

// Events follows the table's changes (GET /v1/events): it calls fn with
// each change as the gateway makes it, until ctx is done (then it returns
// nil), fn returns an error, or the stream ends (the gateway stopped, or
// this follower fell behind: an error). It does not use the Client's
// timeout: a stream has no end of its own.
func (c *Client) Events(ctx context.Context, fn func(ChangeView) error) error {
	if c.BaseURL == "" {
		return errors.New("control: no gateway URL (Client.BaseURL) given")
	}
	u := strings.TrimRight(c.BaseURL, "/") + PathEvents
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("control: gateway URL %q: %w", c.BaseURL, err)
	}
	req.Header.Set("Accept", "application/jsonl")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = defaultHTTP
	}
	stream := *hc
	stream.Timeout = 0
	resp, err := stream.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("control: cannot reach gateway at %s: %w", c.BaseURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
		if e := apiError(resp.StatusCode, data); e != nil {
			return e
		}
		return notGateway(resp, data, u)
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var cv ChangeView
		if err := dec.Decode(&cv); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("control: %s: the gateway ended the stream (it stopped, or this follower fell behind)", u)
			}
			return fmt.Errorf("control: read %s: %w", u, err)
		}
		if err := fn(cv); err != nil {
			return err
		}
	}
}

// do sends in (if not nil) as JSON to path and decodes a 2xx answer into
// out. A non-2xx answer is an *APIError.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	if c.BaseURL == "" {
		return errors.New("control: no gateway URL (Client.BaseURL) given")
	}
	u := strings.TrimRight(c.BaseURL, "/") + path
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("control: encode %s request: %w", path, err)
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return fmt.Errorf("control: gateway URL %q: %w", c.BaseURL, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = defaultHTTP
	}
	resp, err := hc.Do(req)
	if err != nil {
		// url.Error repeats the method and URL; say it once, our way.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("control: cannot reach gateway at %s: %w", c.BaseURL, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		return fmt.Errorf("control: read answer from %s: %w", u, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		if e := apiError(resp.StatusCode, data); e != nil {
			return e
		}
		return notGateway(resp, data, u)
	}
	if !isJSON(resp.Header.Get("Content-Type")) {
		return notGateway(resp, data, u)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("control: decode answer from %s: %w", u, err)
	}
	return nil
}

// isJSON reports whether a Content-Type is the API's, application/json.
func isJSON(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "application/json")
}

// notGateway summarises an answer that is not the API's: its status, its
// content type and where it came from, and a short plain-text body (an
// HTML page is not shown).
func notGateway(resp *http.Response, data []byte, u string) error {
	ct, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
	what := resp.Status
	if ct != "" {
		what += " (" + ct + ")"
	}
	msg := fmt.Sprintf("%s from %s", what, u)
	if strings.EqualFold(ct, "text/plain") {
		line, _, _ := strings.Cut(strings.TrimSpace(string(data)), "\n")
		if line != "" && len(line) <= 80 {
			msg += ": " + line
		}
	}
	return fmt.Errorf("%w: %s", ErrNotGateway, msg)
}

// apiError builds the APIError for a non-2xx answer in the API's JSON;
// nil when the body is not that (a proxy's HTML page, say).
func apiError(code int, data []byte) *APIError {
	var b errorBody
	if err := json.Unmarshal(data, &b); err != nil || b.Error == "" {
		return nil
	}
	return &APIError{Code: code, Message: b.Error, Field: b.Field}
}
