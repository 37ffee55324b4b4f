"""Make one host platform's wheelhouse on the controller, once: the dependency wheels of the built
vps-brain wheel for that platform, in one reproducible tar (DEST.tar).

argv: DEST WHEEL PYTHON_VERSION PLATFORM... (WHEEL may name extras: vps_brain-X.whl[store]; pip's --python-version and --platform values, as the
package_host_platform filter names them). The package role runs it with ansible.builtin.command argv
and the controller's Python: the version and platforms come from a managed host, so they reach pip
as single arguments and no shell ever parses them.
Two plays at once share the cache: one lock per DEST, the tar written aside and moved in.
Prints "made by another play" or "wheelhouse made".
"""

import fcntl
import os
import subprocess
import sys


def main():
    if len(sys.argv) < 5:
        sys.exit('usage: wheelhouse.py DEST WHEEL PYTHON_VERSION PLATFORM...')
    dest, wheel, pyver = sys.argv[1:4]
    download = [sys.executable, '-m', 'pip', 'download', '--quiet', '--only-binary=:all:',
                '--implementation', 'cp', '--python-version', pyver, '--abi', 'cp' + pyver]
    for platform in sys.argv[4:]:
        download += ['--platform', platform]
    download += ['--dest', dest, wheel]
    with open(dest + '.lock', 'w', encoding='utf-8') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isfile(dest + '.tar'):
            print('made by another play')
            return
        subprocess.run(download, check=True)
        subprocess.run(['tar', '--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner',
                        '--exclude=vps_brain-*', '-cf', dest + '.tar.tmp', '-C', dest, '.'], check=True)
        os.replace(dest + '.tar.tmp', dest + '.tar')
    print('wheelhouse made')


if __name__ == '__main__':
    try:
        main()
    except subprocess.CalledProcessError as exc:
        sys.exit('wheelhouse.py: %s exited with %s' % ('tar' if exc.cmd[0] == 'tar' else 'pip download', exc.returncode))
