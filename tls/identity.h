/* Peer identity from an X.509 certificate: the SANs by type and the subject. URI SANs
 * carry SPIFFE IDs (spiffe://<trust-domain>/ns/<ns>/sa/<sa>), the principal RBAC matches
 * and x-forwarded-client-cert reports. */
#ifndef PT_TLS_IDENTITY_H
#define PT_TLS_IDENTITY_H

#include <openssl/x509.h>

#define PT_IDENTITY_MAX_SANS 16

typedef struct pt_tls_identity {
    char *uri_sans[PT_IDENTITY_MAX_SANS];
    unsigned nuri;
    char *dns_sans[PT_IDENTITY_MAX_SANS];
    unsigned ndns;
    char *ip_sans[PT_IDENTITY_MAX_SANS];
    unsigned nip;
    char *email_sans[PT_IDENTITY_MAX_SANS];
    unsigned nemail;
    char *subject;      /* RFC 2253 form, or NULL */
    char *serial;       /* hex */
    char *sha256;       /* hex digest of the DER certificate (x-forwarded-client-cert Hash) */
    int present;        /* a certificate was there */
} pt_tls_identity_t;

/* Fills *id from cert (all strings malloc'd; cert may be NULL). */
void pt_identity_from_cert(pt_tls_identity_t *id, X509 *cert);
void pt_identity_dispose(pt_tls_identity_t *id);

#endif
