"""Audio: format sniffing, decoding, voice activity, call analytics, timeline pictures and clips."""
