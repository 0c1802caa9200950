package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/vipmux/vipmux/registry"
)

// httpError is a problem with the HTTP request as such (its path, method,
// credentials or body framing) rather than with the values of its fields.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

// fail answers r with the status and JSON error body for err. It is the one
// place where errors become HTTP status codes.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var (
		he   *httpError
		fe   *registry.FieldError
		mbe  *http.MaxBytesError
		body = errorBody{Error: err.Error()}
		code int
	)
	switch {
	case errors.As(err, &he):
		code = he.code
	case errors.As(err, &mbe):
		code = http.StatusRequestEntityTooLarge
		body.Error = fmt.Sprintf("request body is larger than %d bytes", mbe.Limit)
	case errors.Is(err, registry.ErrInvalid):
		code = http.StatusBadRequest
	case errors.Is(err, registry.ErrConflict):
		code = http.StatusConflict
	case errors.Is(err, registry.ErrNotFound):
		code = http.StatusNotFound
	default:
		code = http.StatusInternalServerError
		s.log.Error("control request failed", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
	}
	if code < http.StatusInternalServerError && errors.As(err, &fe) {
		body.Error, body.Field = fe.Msg, fe.Field
	}
	writeJSON(w, code, body)
}

// decodeError turns an encoding/json error into one that fail maps.
func decodeError(err error) error {
	var (
		mbe *http.MaxBytesError
		se  *json.SyntaxError
		te  *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &mbe):
		return err
	case errors.Is(err, io.EOF):
		return &httpError{code: http.StatusBadRequest, msg: "empty body: want a JSON object"}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &httpError{code: http.StatusBadRequest, msg: "malformed JSON: unexpected end of body"}
	case errors.As(err, &se):
		return &httpError{code: http.StatusBadRequest, msg: fmt.Sprintf("malformed JSON at byte %d: %s", se.Offset, strings.TrimPrefix(se.Error(), "json: "))}
	case errors.As(err, &te):
		if te.Field == "" {
			return &httpError{code: http.StatusBadRequest, msg: fmt.Sprintf("body is a JSON %s: want a JSON object", te.Value)}
		}
		return registry.Invalid(te.Field, "JSON %s is not a %s", te.Value, jsonType(te.Type.Kind().String()))
	}
	// encoding/json has no type for unknown fields; its message is stable:
	// `json: unknown field "name"`.
	if rest, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		if name, uerr := strconv.Unquote(rest); uerr == nil {
			return registry.Invalid(name, "unknown field")
		}
	}
	return &httpError{code: http.StatusBadRequest, msg: "malformed JSON: " + strings.TrimPrefix(err.Error(), "json: ")}
}

// jsonType names a Go kind as the JSON type a client should send.
func jsonType(kind string) string {
	switch kind {
	case "int", "int64", "ptr":
		return "integer"
	case "string":
		return "string"
	case "struct":
		return "object"
	}
	return kind
}
