package control

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// testClient serves a handler over testRegistry and returns a client for it.
func testClient(t *testing.T, token string) *Client {
	t.Helper()
	h, _ := testHandler(t, func(o *Options) { o.Token = testToken })
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &Client{BaseURL: srv.URL + "/", Token: token, HTTP: srv.Client()}
}

func TestClientCalls(t *testing.T) {
	ctx := context.Background()
	c := testClient(t, testToken)

	b, err := c.Register(ctx, RegisterRequest{Name: "web-c", Port: intp(80), Backend: "198.19.0.4:80", State: "standby"})
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	if len(b.Members) != 3 || b.Members[2].Name != "web-c" || b.Members[2].State != "standby" {
		t.Errorf("Register = %+v, want web-c third and standby", b)
	}

	b, err = c.Switch(ctx, SwitchRequest{Port: intp(80), To: "web-c"})
	if err != nil {
		t.Fatalf("Switch: %v", err)
	}
	want := BindingView{IP: "198.18.0.100", Port: 80, Members: []MemberView{
		{Name: "web-a", Backend: "198.19.0.2:80", State: "standby", Since: testNow, Connections: 3, Reason: "switch to web-c", Cause: "switch"},
		{Name: "web-b", Backend: "198.19.0.3:80", State: "standby", Since: testNow, Reason: "registered", Cause: "register"},
		{Name: "web-c", Backend: "198.19.0.4:80", State: "active", Since: testNow, Reason: "switch", Cause: "switch"},
	}}
	if diff := cmp.Diff(want, b); diff != "" {
		t.Errorf("Switch (-want +got):\n%s", diff)
	}

	if err := c.Deregister(ctx, DeregisterRequest{Name: "web-a", IP: "198.18.0.10"}); err != nil {
		t.Fatalf("Deregister: %v", err)
	}

	st, err := c.Status(ctx)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	wantSt := Status{Shared: "198.18.0.100", Bindings: []BindingView{want}, Events: []EventView{}, Summary: Summary{Bindings: 1, Members: 3, HeldIPs: 1}}
	if diff := cmp.Diff(wantSt, st); diff != "" {
		t.Errorf("Status (-want +got):\n%s", diff)
	}
}

func TestClientAPIError(t *testing.T) {
	tests := []struct {
		name    string
		token   string
		call    func(context.Context, *Client) error
		want    APIError
		wantStr string
	}{
		{
			name:  "conflict",
			token: testToken,
			call: func(ctx context.Context, c *Client) error {
				_, err := c.Register(ctx, RegisterRequest{Name: "web-b", IP: "198.18.0.10", Backend: "198.19.0.3"})
				return err
			},
			want:    APIError{Code: 409, Message: "198.18.0.10 is already held by server web-a; deregister it first", Field: "ip"},
			wantStr: "409 Conflict: ip: 198.18.0.10 is already held by server web-a; deregister it first",
		},
		{
			name:  "field",
			token: testToken,
			call: func(ctx context.Context, c *Client) error {
				_, err := c.Register(ctx, RegisterRequest{Name: "web-c", IP: "198.17.0.1", Backend: "198.19.0.3"})
				return err
			},
			want:    APIError{Code: 400, Message: "198.17.0.1 is outside the front networks [198.18.0.0/24] (nic.networks)", Field: "ip"},
			wantStr: "400 Bad Request: ip: 198.17.0.1 is outside the front networks [198.18.0.0/24] (nic.networks)",
		},
		{
			name:  "port out of range",
			token: testToken,
			call: func(ctx context.Context, c *Client) error {
				return c.Deregister(ctx, DeregisterRequest{Name: "web-a", Port: intp(70000)})
			},
			want:    APIError{Code: 400, Message: "70000 is out of range 1..65535", Field: "port"},
			wantStr: "400 Bad Request: port: 70000 is out of range 1..65535",
		},
		{
			name:  "not found",
			token: testToken,
			call: func(ctx context.Context, c *Client) error {
				_, err := c.Switch(ctx, SwitchRequest{Port: intp(80), To: "web-z"})
				return err
			},
			want:    APIError{Code: 404, Message: "web-z is not registered on 198.18.0.100:80", Field: "to"},
			wantStr: "404 Not Found: to: web-z is not registered on 198.18.0.100:80",
		},
		{
			name: "unauthorized",
			call: func(ctx context.Context, c *Client) error {
				_, err := c.Status(ctx)
				return err
			},
			want:    APIError{Code: 401, Message: "missing or wrong bearer token"},
			wantStr: "401 Unauthorized: missing or wrong bearer token",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := testClient(t, tc.token)
			err := tc.call(context.Background(), c)
			var got *APIError
			if !errors.As(err, &got) {
				t.Fatalf("error = %v (%T), want *APIError", err, err)
			}
			if diff := cmp.Diff(tc.want, *got); diff != "" {
				t.Errorf("APIError (-want +got):\n%s", diff)
			}
			if got.Error() != tc.wantStr {
				t.Errorf("Error() = %q, want %q", got.Error(), tc.wantStr)
			}
		})
	}
}

// TestClientNotGateway checks that an answer that is not the API's JSON
// (a web server's page, a proxy's error) is summarised as ErrNotGateway,
// with status, content type and URL, and never dumps an HTML page.
func TestClientNotGateway(t *testing.T) {
	for _, tc := range []struct {
		name     string
		handler  http.HandlerFunc
		wantText []string
		dontWant string
	}{
		{
			name: "html 404",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
				w.WriteHeader(http.StatusNotFound)
				fmt.Fprint(w, "<html><body><h1>Not Found</h1></body></html>")
			},
			wantText: []string{"not a vipmux gateway: 404 Not Found (text/html) from http://", "/v1/status"},
			dontWant: "<html>",
		},
		{
			name:     "plain 502",
			handler:  func(w http.ResponseWriter, r *http.Request) { http.Error(w, "upstream gone", http.StatusBadGateway) },
			wantText: []string{"not a vipmux gateway: 502 Bad Gateway (text/plain) from http://", "/v1/status: upstream gone"},
		},
		{
			name: "html 200",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html")
				fmt.Fprint(w, "<html>welcome</html>")
			},
			wantText: []string{"not a vipmux gateway: 200 OK (text/html) from http://"},
			dontWant: "<html>",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			_, err := (&Client{BaseURL: srv.URL}).Status(context.Background())
			if !errors.Is(err, ErrNotGateway) {
				t.Fatalf("Status against %s = %v, want ErrNotGateway", tc.name, err)
			}
			var ae *APIError
			if errors.As(err, &ae) {
				t.Errorf("Status against %s = %#v, an APIError; want none (no gateway answered)", tc.name, ae)
			}
			for _, w := range tc.wantText {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if tc.dontWant != "" && strings.Contains(err.Error(), tc.dontWant) {
				t.Errorf("error %q shows the page (%q)", err, tc.dontWant)
			}
		})
	}
}

func TestAPIErrorString(t *testing.T) {
	tests := []struct {
		name string
		err  APIError
		want string
	}{
		{name: "message", err: APIError{Code: 409, Message: "taken"}, want: "409 Conflict: taken"},
		{name: "field", err: APIError{Code: 400, Message: "bad", Field: "ip"}, want: "400 Bad Request: ip: bad"},
		{name: "bare", err: APIError{Code: 500}, want: "500 Internal Server Error"},
		{name: "unknown code", err: APIError{Code: 599, Message: "odd"}, want: "599: odd"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("%+v.Error() = %q, want %q", tc.err, got, tc.want)
			}
		})
	}
}

func TestClientUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now
	c := &Client{BaseURL: url}
	_, err = c.Status(context.Background())
	if err == nil {
		t.Fatalf("Status against closed port succeeded")
	}
	var ae *APIError
	if errors.As(err, &ae) {
		t.Errorf("Status against closed port = APIError %v, want a connection error", ae)
	}
	if !strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), "reach gateway") {
		t.Errorf("error %q does not say that gateway %s could not be reached", err, url)
	}
}

func TestClientNoURL(t *testing.T) {
	if _, err := (&Client{}).Status(context.Background()); err == nil {
		t.Errorf("Status with empty BaseURL succeeded")
	}
}

func TestClientContextCanceled(t *testing.T) {
	c := testClient(t, testToken)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Status(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Status with canceled ctx = %v, want context.Canceled", err)
	}
}

func TestReadTokenFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		content *string // nil: the file does not exist
		want    string
		wantErr bool
	}{
		{name: "plain", content: ptr("abc123"), want: "abc123"},
		{name: "trailing newline", content: ptr("abc123\n"), want: "abc123"},
		{name: "surrounding whitespace", content: ptr("  \tabc123 \r\n\n"), want: "abc123"},
		{name: "empty", content: ptr(""), wantErr: true},
		{name: "only whitespace", content: ptr(" \n\t\n"), wantErr: true},
		{name: "two lines", content: ptr("abc\ndef\n"), wantErr: true},
		{name: "inner space", content: ptr("abc def"), wantErr: true},
		{name: "missing file", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			if tc.content != nil {
				if err := os.WriteFile(path, []byte(*tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := ReadTokenFile(path)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("ReadTokenFile(%q) = %q, %v; want %q, error %v", *orEmpty(tc.content), got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func orEmpty(s *string) *string {
	if s == nil {
		return ptr("<no file>")
	}
	return s
}
