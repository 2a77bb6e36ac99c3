package channels

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/microchannels/channels/broker"
)

// SendToChannel serializes payload and publishes it to channel (the name
// before the namespace prefix). It returns once the broker accepted the
// message. Without a deadline on ctx it is bounded by DefaultPublishTimeout.
// Sending from a handler's ctx propagates the request id, caller, parent
// channel and metadata.
//
// With the JSON serializer (the default), a []byte payload is taken as
// serialized JSON and sent as is; one that is not valid JSON is an
// *broker.EncodeError: send arbitrary bytes with broker.WithRaw().
// json.RawMessage is sent as JSON too; a string becomes a JSON string.
func (p *Plugin) SendToChannel(ctx context.Context, channel string, payload any, opts ...broker.PublishOption) error {
	return (*p.send.Load())(ctx, channel, payload, opts...)
}

// send0 is the innermost send, wrapped by the SendToChannel interceptors.
func (p *Plugin) send0(ctx context.Context, channel string, payload any, opts ...broker.PublishOption) error {
	switch p.state.Load() {
	case stateIdle:
		return ErrNotConnected
	case stateStopped:
		return ErrClosed
	}
	name := prefixed(p.o.namespace, channel)
	if err := checkName("channel name", name); err != nil {
		return err
	}
	po, err := broker.NewPublishOptions(opts...)
	if err != nil {
		return err
	}
	body, err := p.encode(name, payload, po.Raw)
	if err != nil {
		return err
	}
	headers, err := p.outgoingHeaders(ctx, po.Headers)
	if err != nil {
		return &broker.EncodeError{Channel: name, Err: err}
	}
	po.Headers = nil
	if err := p.limits.Check(len(body), headers); err != nil {
		return &broker.PublishError{Channel: name, Err: err}
	}
	if _, ok := ctx.Deadline(); !ok && !p.instant {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.o.publishTimeout)
		defer cancel()
	}
	return p.adapter.Publish(ctx, name, &broker.Outgoing{Payload: body, Headers: headers, Options: po})
}

// encode serializes a payload. With the JSON serializer, a []byte payload
// is taken as already serialized: sent as is when it is valid JSON, refused
// otherwise (instead of json.Marshal's surprising base64 string).
func (p *Plugin) encode(channel string, payload any, raw bool) ([]byte, error) {
	var (
		b   []byte
		err error
	)
	if bs, ok := payload.([]byte); ok && !raw && strings.EqualFold(p.o.serializer.Name(), "JSON") {
		if !json.Valid(bs) {
			return nil, &broker.EncodeError{Channel: channel, Err: errBytesNotJSON}
		}
		b = bs
	} else if raw {
		b, err = broker.RawBytes(payload)
	} else {
		b, err = p.o.serializer.Marshal(payload)
	}
	if err != nil {
		return nil, &broker.EncodeError{Channel: channel, Err: err}
	}
	if len(b) > p.o.maxPayloadSize {
		return nil, &broker.EncodeError{Channel: channel, Err: fmt.Errorf("%w: payload of %d bytes, more than MaxPayloadSize (%d): consumers would refuse it",
			broker.ErrTooLarge, len(b), p.o.maxPayloadSize)}
	}
	return b, nil
}
