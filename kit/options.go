package kit

import (
	"fmt"

	"github.com/microchannels/channels/broker"
)

// Option returns the first per-channel adapter option of type T (or *T).
func Option[T any](c *broker.Channel) (T, bool) { return first[T](c.AdapterOptions) }

func first[T any](opts []any) (T, bool) {
	for _, o := range opts {
		if v, ok := o.(T); ok {
			return v, true
		}
		if p, ok := o.(*T); ok && p != nil {
			return *p, true
		}
	}
	var zero T
	return zero, false
}

// PrepareChannel is the first step of every adapter's Subscribe: it
// normalizes and validates ch, refuses channel options of any type but T
// (or *T), overlays the channel's own T (validated) on base (the
// adapter-wide options) through merge, then applies defaults (when not
// nil) and validates the result.
func PrepareChannel[T interface{ Validate() error }](ch *broker.Channel, adapter string, base T, merge func(base, over T) T, defaults func(T) T) (T, error) {
	ch.Normalize()
	if err := ch.Validate(); err != nil {
		return base, err
	}
	if err := CheckOptions(adapter, ch.AdapterOptions, IsOf[T]); err != nil {
		return base, fmt.Errorf("channel %q: %w", ch.Name, err)
	}
	if co, ok := Option[T](ch); ok {
		if err := co.Validate(); err != nil {
			return base, fmt.Errorf("channel %q: %w", ch.Name, err)
		}
		base = merge(base, co)
	}
	if defaults != nil {
		base = defaults(base)
		if err := base.Validate(); err != nil {
			return base, fmt.Errorf("channel %q: %w", ch.Name, err)
		}
	}
	return base, nil
}

// ApplyOptions applies an adapter's functional options to it in order,
// skipping nil ones; the first error is returned.
func ApplyOptions[T any, O ~func(*T) error](t *T, opts []O) error {
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(t); err != nil {
			return err
		}
	}
	return nil
}

// IsOf reports whether v is a T or a *T (the known-type test of
// CheckOptions for one option type).
func IsOf[T any](v any) bool {
	switch v.(type) {
	case T, *T:
		return true
	}
	return false
}

// SendOption returns the first typed send option of type T (or *T).
func SendOption[T any](o broker.PublishOptions) (T, bool) { return first[T](o.AdapterOptions) }

// CheckOptions returns an ErrInvalidOption error naming the first value of
// opts that known rejects: adapters call it on channel and send options so
// that an option meant for another adapter is an error, not ignored.
func CheckOptions(adapter string, opts []any, known func(any) bool) error {
	for _, o := range opts {
		if o != nil && !known(o) {
			return fmt.Errorf("%w: the %s adapter does not know options of type %T", broker.ErrInvalidOption, adapter, o)
		}
	}
	return nil
}

// MergedOption merges, in order, every option of type T (or non-nil *T) in
// opts with merge (later values winning field by field, as merge decides),
// and reports whether there was one: how an adapter reads its typed send
// options from PublishOptions.AdapterOptions.
func MergedOption[T any](opts []any, merge func(base, over T) T) (T, bool) {
	var out T
	found := false
	for _, o := range opts {
		switch v := o.(type) {
		case T:
			out, found = merge(out, v), true
		case *T:
			if v != nil {
				out, found = merge(out, *v), true
			}
		}
	}
	return out, found
}
