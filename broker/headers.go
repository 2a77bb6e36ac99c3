package broker

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"time"
)

// Header names shared with @moleculer/channels.
const (
	HeaderRedeliveredCount  = "x-redelivered-count"
	HeaderGroup             = "x-group"
	HeaderOriginalChannel   = "x-original-channel"
	HeaderOriginalGroup     = "x-original-group"
	HeaderOriginalID        = "x-original-id"
	HeaderOriginalPartition = "x-original-partition"

	HeaderErrorPrefix    = "x-error-"
	HeaderErrorMessage   = "x-error-message"
	HeaderErrorCode      = "x-error-code"
	HeaderErrorStack     = "x-error-stack"
	HeaderErrorType      = "x-error-type"
	HeaderErrorData      = "x-error-data"
	HeaderErrorName      = "x-error-name"
	HeaderErrorRetryable = "x-error-retryable"
	HeaderErrorTimestamp = "x-error-timestamp"

	// HeaderKey carries the message key of a send made with WithKey, on
	// every broker (Kafka also uses it as the record key).
	HeaderKey = "x-channels-key"

	HeaderRequestID         = "$requestID"
	HeaderParentID          = "$parentID"
	HeaderMeta              = "$meta"
	HeaderCaller            = "$caller"
	HeaderParentChannelName = "$parentChannelName"
	HeaderTracing           = "$tracing"
	HeaderLevel             = "$level"
	HeaderHeaders           = "$headers"
)

// Optional error abilities read by ErrorToHeaders. Errors that implement them
// carry the matching x-error-* header.
type (
	// ErrorCoder exposes a code (x-error-code).
	ErrorCoder interface{ Code() string }
	// ErrorTyper exposes a type (x-error-type).
	ErrorTyper interface{ Type() string }
	// ErrorNamer exposes a name (x-error-name); otherwise the Go type name is used.
	ErrorNamer interface{ Name() string }
	// ErrorDataer exposes structured data (x-error-data, JSON then base64).
	ErrorDataer interface{ Data() any }
	// Retryabler exposes whether the error is retryable (x-error-retryable).
	// Retryable() == false has the same effect as Permanent.
	Retryabler interface{ Retryable() bool }
)

// ErrorToHeaders encodes err as x-error-* headers (the codec of
// @moleculer/channels 0.3: stack and data are base64). It returns nil for a
// nil error.
func ErrorToHeaders(err error, now time.Time) map[string]string {
	if err == nil {
		return nil
	}
	h := make(map[string]string, 8)
	name := ErrorName(err)
	h[HeaderErrorMessage] = EscapeLineBreaks(err.Error())
	h[HeaderErrorName] = EscapeLineBreaks(name)
	stack := name + ": " + err.Error()
	var pe *PanicError
	if errors.As(err, &pe) && len(pe.Stack) > 0 {
		stack += "\n" + string(pe.Stack)
	}
	h[HeaderErrorStack] = base64.StdEncoding.EncodeToString([]byte(stack))
	var c ErrorCoder
	if errors.As(err, &c) {
		h[HeaderErrorCode] = EscapeLineBreaks(c.Code())
	}
	var t ErrorTyper
	if errors.As(err, &t) {
		h[HeaderErrorType] = EscapeLineBreaks(t.Type())
	}
	var d ErrorDataer
	if errors.As(err, &d) {
		if b, jerr := json.Marshal(d.Data()); jerr == nil {
			h[HeaderErrorData] = base64.StdEncoding.EncodeToString(b)
		}
	}
	var r Retryabler
	if errors.As(err, &r) {
		h[HeaderErrorRetryable] = strconv.FormatBool(r.Retryable())
	}
	h[HeaderErrorTimestamp] = strconv.FormatInt(now.UnixMilli(), 10)
	return h
}

// ErrorName is the name written to x-error-name: the error's Name() when it
// has one, "Error" for plain errors.New / fmt.Errorf values (as in
// JavaScript), else the Go type name of the outermost typed error.
func ErrorName(err error) string {
	var n ErrorNamer
	if errors.As(err, &n) {
		return n.Name()
	}
	for e := err; e != nil; {
		t := reflect.TypeOf(e)
		if t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if n := t.Name(); n != "" && n[0] >= 'A' && n[0] <= 'Z' {
			return n
		}
		switch u := e.(type) {
		case interface{ Unwrap() error }:
			e = u.Unwrap()
		case interface{ Unwrap() []error }:
			errs := u.Unwrap()
			if len(errs) == 0 {
				return "Error"
			}
			e = errs[len(errs)-1]
		default:
			e = nil
		}
	}
	return "Error"
}

// Timestamps ErrorFromHeaders keeps: years 1 to 9999 with a day to spare
// in any time zone, the range time.Time can marshal as JSON.
const (
	minErrorMillis = -62135596800000 + 86400000 // 0001-01-02T00:00:00Z
	maxErrorMillis = 253402214400000            // 9999-12-31T00:00:00Z
)

// ErrorFromHeaders decodes x-error-* headers; it returns nil when there are
// none. A stack or data that is not valid base64, data that is not valid
// JSON once decoded, and a timestamp outside years 1-9999 are left out.
// Everything it returns is at most as large as the headers.
func ErrorFromHeaders(h map[string]string) *RemoteError {
	msg, ok := h[HeaderErrorMessage]
	name := h[HeaderErrorName]
	if !ok && name == "" {
		return nil
	}
	e := &RemoteError{Message: msg, Name: name, Code: h[HeaderErrorCode], Type: h[HeaderErrorType]}
	if s, err := base64.StdEncoding.DecodeString(h[HeaderErrorStack]); err == nil {
		e.Stack = string(s)
	}
	if d, err := base64.StdEncoding.DecodeString(h[HeaderErrorData]); err == nil && len(d) > 0 && json.Valid(d) {
		e.Data = d
	}
	if r, err := strconv.ParseBool(h[HeaderErrorRetryable]); err == nil {
		e.Retryable = &r
	}
	if ms, err := strconv.ParseInt(h[HeaderErrorTimestamp], 10, 64); err == nil && ms >= minErrorMillis && ms <= maxErrorMillis {
		e.Timestamp = time.UnixMilli(ms)
	}
	return e
}

// CloneHeaders copies h, leaving room for extra entries.
func CloneHeaders(h map[string]string, extra int) map[string]string {
	out := make(map[string]string, len(h)+extra)
	for k, v := range h {
		out[k] = v
	}
	return out
}
