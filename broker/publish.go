package broker

import "fmt"

// PublishOptions collects the options of one send. Only what every broker
// honours is a field; what one broker alone understands is a typed value of
// that adapter's package in AdapterOptions (for example redis.SendOptions),
// and an adapter refuses a value of a type it does not know.
type PublishOptions struct {
	// Headers are user headers sent with the message.
	Headers map[string]string
	// Raw sends a []byte or string payload without serializing it.
	Raw bool
	// AdapterOptions holds typed send options of adapter packages.
	AdapterOptions []any
}

// PublishOption changes one send.
type PublishOption func(*PublishOptions) error

// NewPublishOptions applies opts over the defaults.
func NewPublishOptions(opts ...PublishOption) (PublishOptions, error) {
	var o PublishOptions
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return o, err
		}
	}
	return o, nil
}

// WithHeaders adds user headers. Names starting with "$" and "x-" are used by
// context propagation and retries; setting them by hand overrides those.
func WithHeaders(h map[string]string) PublishOption {
	return func(o *PublishOptions) error {
		if len(h) == 0 {
			return nil
		}
		if o.Headers == nil {
			o.Headers = make(map[string]string, len(h))
		}
		for k, v := range h {
			if k == "" {
				return fmt.Errorf("%w: empty header name", ErrInvalidOption)
			}
			o.Headers[k] = v
		}
		return nil
	}
}

// WithHeader adds one user header.
func WithHeader(k, v string) PublishOption { return WithHeaders(map[string]string{k: v}) }

// WithRaw sends a []byte or string payload as is.
func WithRaw() PublishOption { return func(o *PublishOptions) error { o.Raw = true; return nil } }

// WithAdapterOptions adds typed send options of an adapter package (for
// example redis.SendOptions{MaxLen: 1000}). A value that implements
// Validate() error is validated here. The adapter of the send refuses a
// value of a type it does not know, with ErrInvalidOption.
func WithAdapterOptions(opts ...any) PublishOption {
	return func(o *PublishOptions) error {
		for _, v := range opts {
			if v == nil {
				continue
			}
			if val, ok := v.(interface{ Validate() error }); ok {
				if err := val.Validate(); err != nil {
					return err
				}
			}
			o.AdapterOptions = append(o.AdapterOptions, v)
		}
		return nil
	}
}

// SendOption returns the first typed send option of type T (or *T).
func SendOption[T any](o PublishOptions) (T, bool) { return first[T](o.AdapterOptions) }

// CheckOptions returns an ErrInvalidOption error naming the first value of
// opts that known rejects: adapters call it on channel and send options so
// that an option meant for another adapter is an error, not ignored.
func CheckOptions(adapter string, opts []any, known func(any) bool) error {
	for _, o := range opts {
		if o != nil && !known(o) {
			return fmt.Errorf("%w: the %s adapter does not know options of type %T", ErrInvalidOption, adapter, o)
		}
	}
	return nil
}
