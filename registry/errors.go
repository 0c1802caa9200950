package registry

import (
	"errors"
	"fmt"
)

// Sentinel errors; callers branch with errors.Is.
var (
	// ErrInvalid reports a request whose fields are malformed or out of range.
	ErrInvalid = errors.New("invalid request")
	// ErrConflict reports a request that contradicts the current table.
	ErrConflict = errors.New("conflict")
	// ErrNotFound reports a binding or member that does not exist.
	ErrNotFound = errors.New("not found")
)

// FieldError is an error that names the request field at fault. Its kind
// is ErrInvalid unless Kind says otherwise (ErrConflict, ErrNotFound).
type FieldError struct {
	// Field is the request field, as the API and CLI spell it ("ip", "name").
	Field string
	// Msg says what is wrong with it.
	Msg string
	// Kind is the sentinel that errors.Is matches; nil means ErrInvalid.
	Kind error
}

// Error implements error.
func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Is makes errors.Is(err, kind) true, where kind is e.Kind or ErrInvalid.
func (e *FieldError) Is(target error) bool {
	if e.Kind == nil {
		return target == ErrInvalid
	}
	return target == e.Kind
}

// fieldErr returns a FieldError of kind for field.
func fieldErr(kind error, field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...), Kind: kind}
}

// Invalid returns a FieldError for field with a formatted message.
func Invalid(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// BatchError is the error of RegisterBatch: the registration at Index (from
// 0) that could not be applied, and why. Nothing of the batch was applied.
type BatchError struct {
	// Index is the position of the registration in the batch.
	Index int
	// Err is its error, as Register would return it.
	Err error
}

// Error implements error.
func (e *BatchError) Error() string { return fmt.Sprintf("registration %d: %v", e.Index, e.Err) }

// Unwrap returns Err, so that errors.Is and errors.As see the kind and the
// field of the registration's error.
func (e *BatchError) Unwrap() error { return e.Err }
