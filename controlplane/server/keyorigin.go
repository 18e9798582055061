package server

import "github.com/packetparamedic/reflector/controlplane/identity"

// logKeyOrigin says where the identity came from when it is new or
// adopted (with the Endpoint ID in the message text).
func (s *Server) logKeyOrigin(origin identity.KeyOrigin) {
	path := s.cfg.Identity.PrivateKeyPath
	switch origin {
	case identity.KeyCreated:
		s.log.Info().Str("path", path).Str("endpoint_id", s.id.String()).Msg("created a new identity key, Endpoint ID " + s.id.String())
	case identity.KeyAdopted:
		s.log.Warn().Str("from", identity.LegacyKeyPath(path)).Str("path", path).Str("endpoint_id", s.id.String()).
			Msg("adopted the earlier reflector's identity.key (Endpoint ID " + s.id.String() + " kept)")
	}
}
