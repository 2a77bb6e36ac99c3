// Package hooks is the interceptor pipeline of channels: the Go form of the
// localChannel and sendToChannel middleware hooks of @moleculer/channels.
//
// A ChannelInterceptor wraps every channel handler; a SendInterceptor wraps
// SendToChannel. Both are composed once, when the plugin starts, in
// registration order: the first registered is the outermost, so it sees a
// delivery first and its result last. Nothing is looked up per message.
//
// Built-ins: [Recover] turns panics into *broker.PanicError, [Logging] logs
// each delivery and send, [Timeout] bounds each delivery with a deadline.
package hooks
