#include "tls/identity.h"

#include <arpa/inet.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

static char *asn1_string(const ASN1_STRING *s)
{
    int len = ASN1_STRING_length(s);
    const unsigned char *d = ASN1_STRING_get0_data(s);
    /* Embedded NULs would let "a\0.evil" pass for "a": refuse such names. */
    if (len < 0 || memchr(d, 0, (size_t)len) != NULL)
        return NULL;
    char *out = malloc((size_t)len + 1);
    if (out != NULL) {
        memcpy(out, d, (size_t)len);
        out[len] = '\0';
    }
    return out;
}

void pt_identity_from_cert(pt_tls_identity_t *id, X509 *cert)
{
    memset(id, 0, sizeof(*id));
    if (cert == NULL)
        return;
    id->present = 1;
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
        switch (gn->type) {
        case GEN_URI:
            if (id->nuri < PT_IDENTITY_MAX_SANS) {
                char *v = asn1_string(gn->d.uniformResourceIdentifier);
                if (v)
                    id->uri_sans[id->nuri++] = v;
            }
            break;
        case GEN_DNS:
            if (id->ndns < PT_IDENTITY_MAX_SANS) {
                char *v = asn1_string(gn->d.dNSName);
                if (v)
                    id->dns_sans[id->ndns++] = v;
            }
            break;
        case GEN_EMAIL:
            if (id->nemail < PT_IDENTITY_MAX_SANS) {
                char *v = asn1_string(gn->d.rfc822Name);
                if (v)
                    id->email_sans[id->nemail++] = v;
            }
            break;
        case GEN_IPADD:
            if (id->nip < PT_IDENTITY_MAX_SANS) {
                const ASN1_OCTET_STRING *ip = gn->d.iPAddress;
                char buf[INET6_ADDRSTRLEN] = "";
                if (ip->length == 4)
                    inet_ntop(AF_INET, ip->data, buf, sizeof(buf));
                else if (ip->length == 16)
                    inet_ntop(AF_INET6, ip->data, buf, sizeof(buf));
                if (buf[0])
                    id->ip_sans[id->nip++] = strdup(buf);
            }
            break;
        default:
            break;
        }
    }
    GENERAL_NAMES_free(names);
    BIO *b = BIO_new(BIO_s_mem());
    if (b != NULL) {
        X509_NAME_print_ex(b, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
        char *p;
        long n = BIO_get_mem_data(b, &p);
        id->subject = malloc((size_t)n + 1);
        if (id->subject) {
            memcpy(id->subject, p, (size_t)n);
            id->subject[n] = '\0';
        }
        BIO_free(b);
    }
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
    if (bn != NULL) {
        char *hex = BN_bn2hex(bn);
        if (hex) {
            id->serial = strdup(hex);
            OPENSSL_free(hex);
        }
        BN_free(bn);
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (X509_digest(cert, EVP_sha256(), md, &mdlen)) {
        id->sha256 = malloc(mdlen * 2 + 1);
        if (id->sha256) {
            for (unsigned i = 0; i < mdlen; i++) {
                static const char hexd[] = "0123456789abcdef";
                id->sha256[i * 2] = hexd[md[i] >> 4];
                id->sha256[i * 2 + 1] = hexd[md[i] & 15];
            }
            id->sha256[mdlen * 2] = '\0';
        }
    }
}

void pt_identity_dispose(pt_tls_identity_t *id)
{
    for (unsigned i = 0; i < id->nuri; i++)
        free(id->uri_sans[i]);
    for (unsigned i = 0; i < id->ndns; i++)
        free(id->dns_sans[i]);
    for (unsigned i = 0; i < id->nip; i++)
        free(id->ip_sans[i]);
    for (unsigned i = 0; i < id->nemail; i++)
        free(id->email_sans[i]);
    free(id->subject);
    free(id->serial);
    free(id->sha256);
    memset(id, 0, sizeof(*id));
}
