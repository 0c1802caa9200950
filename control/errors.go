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

// Errors become HTTP answers here, and nowhere else. The mapping goes by
// errors.Is and errors.As, so that it covers the registry's errors and
// every other package's error types, wrapped or not:
//
//   - a request that HTTP itself refuses (*httpError): its own code;
//   - a body over the limit (*http.MaxBytesError): 413;
//   - errors.Is(err, registry.ErrInvalid): 400; registry.ErrConflict: 409;
//     registry.ErrNotFound: 404 (registry.FieldError's Kind, or any
//     type's Is method that answers true for the sentinel: stack's DAD
//     conflict, the gateway's reload refusals);
//   - anything else: 500, logged, its text shown.
//
// Below 500 the body names the field at fault when err is or wraps a
// *registry.FieldError or an error that implements FieldNamer; see
// fieldOf.

// FieldNamer is implemented by an error of any package that names the
// request or configuration field at fault, as the API and the CLI spell it
// ("ip", "health.timeout"). control puts Field in the error body's "field"
// and the error's text, less a leading "FIELD: ", in its "error". The
// error's kind, and so its status, comes from errors.Is with the
// registry's sentinels (ErrInvalid, ErrConflict, ErrNotFound): give the
// type an Is method. *registry.FieldError names its field through its
// Field member instead, which fieldOf reads too.
type FieldNamer interface {
	error
	Field() string
}

// status returns the HTTP status for err; see above.
func status(err error) int {
	var (
		he  *httpError
		mbe *http.MaxBytesError
	)
	switch {
	case errors.As(err, &he):
		return he.code
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, registry.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, registry.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, registry.ErrNotFound):
		return http.StatusNotFound
	}
	return http.StatusInternalServerError
}

// kindOf returns the registry sentinel that err matches, or nil.
func kindOf(err error) error {
	for _, kind := range []error{registry.ErrInvalid, registry.ErrConflict, registry.ErrNotFound} {
		if errors.Is(err, kind) {
			return kind
		}
	}
	return nil
}

// fieldOf returns the field that err names and what it says is wrong with
// it, from the first *registry.FieldError or FieldNamer in err's chain;
// ok is false when err names no field.
func fieldOf(err error) (field, msg string, ok bool) {
	var (
		fe *registry.FieldError
		fn FieldNamer
	)
	switch {
	case errors.As(err, &fe):
		return fe.Field, fe.Msg, true
	case errors.As(err, &fn):
		f := fn.Field()
		return f, strings.TrimPrefix(fn.Error(), f+": "), true
	}
	return "", "", false
}

// fail answers r with the status and JSON error body for err. It is the one
// place where errors become HTTP status codes.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := status(err)
	body := errorBody{Error: err.Error()}
	var mbe *http.MaxBytesError
	switch {
	case code == http.StatusInternalServerError:
		s.log.Error("control request failed", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
	case code == http.StatusRequestEntityTooLarge && errors.As(err, &mbe):
		body.Error = fmt.Sprintf("request body is larger than %d bytes", mbe.Limit)
	default:
		if field, msg, ok := fieldOf(err); ok {
			body.Error, body.Field = msg, field
		}
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
