"""The configs in examples/ load unchanged: each one validates once the certificate files it
names exist (generated here, at the paths the example expects), and without them the only
errors are the unreadable files, as the examples' comments say.

Run: PETREL_BIN=build/petrel /usr/bin/python3 tests/integration/test_examples.py -v
"""

import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import certs as C  # noqa: E402

EXAMPLES = os.path.join(h.REPO_ROOT, 'examples')
CERT_DIR = '/etc/petrel/certs/'


def example_text(name):
    with open(os.path.join(EXAMPLES, name)) as f:
        return f.read()


class ExamplesTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        # The files the examples name, under a temp dir that stands in for /etc/petrel/certs.
        cls.pki = C.Pki()
        cls.dir = tempfile.mkdtemp(prefix='petrel-examples-')
        ca = cls.pki.ca('mesh', 'mesh root')
        workload = cls.pki.issue(ca, 'workload', uris=[C.spiffe('default', 'reviews',
                                                                'cluster.local')])
        files = {'root-cert.pem': ca.cert, 'workload-cert.pem': workload.cert,
                 'workload-key.pem': workload.key}
        for host in ('api.example.com', 'www.example.com'):
            c = cls.pki.issue(ca, host.replace('.', '_'), dns=[host])
            files[host + '/cert.pem'] = c.cert
            files[host + '/key.pem'] = c.key
        for rel, src in files.items():
            dst = os.path.join(cls.dir, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy(src, dst)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)
        cls.pki.close()

    def validate(self, text):
        work = tempfile.mkdtemp(prefix='petrel-example-cfg-')
        self.addCleanup(shutil.rmtree, work, True)
        path = os.path.join(work, 'example.yaml')
        with open(path, 'w') as f:
            f.write(text)
        return h.run_petrel(['--mode', 'validate', '-c', path])

    def examples(self):
        names = sorted(n for n in os.listdir(EXAMPLES) if n.endswith('.yaml'))
        self.assertIn('quickstart.yaml', names)
        self.assertGreaterEqual(len(names), 4)
        return names

    def test_every_example_validates_with_its_certificates(self):
        for name in self.examples():
            with self.subTest(example=name):
                text = example_text(name).replace(CERT_DIR, self.dir + '/')
                rc, out, err = self.validate(text)
                self.assertEqual(rc, 0, err)
                self.assertIn('OK', out)

    def test_without_the_files_only_the_files_are_missing(self):
        for name in self.examples():
            text = example_text(name)
            if CERT_DIR not in text or os.path.isdir(CERT_DIR):
                continue
            with self.subTest(example=name):
                rc, out, err = self.validate(text)
                self.assertEqual(rc, 1, out)
                errors = [l for l in err.splitlines() if l.startswith('error')]
                self.assertTrue(errors, err)
                for line in err.splitlines():
                    if ': ' in line and not line.startswith('error: configuration'):
                        self.assertRegex(line, r'cannot read /etc/petrel/certs/', line)


if __name__ == '__main__':
    unittest.main(verbosity=2)
