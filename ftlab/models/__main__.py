"""python -m ftlab.models convert FOLDER GGUF TARGET | prepare PRESET"""
import sys

from ftlab.models.embedded import _convert, embedded_folder


if __name__ == "__main__":  # python -m ftlab.models convert FOLDER GGUF TARGET | prepare PRESET
    if sys.argv[1:2] == ["convert"]:
        _convert(*sys.argv[2:5])
    elif sys.argv[1:2] == ["prepare"]:
        print(embedded_folder(sys.argv[2]))
    else:
        raise SystemExit("usage: python -m ftlab.models convert FOLDER GGUF TARGET | prepare PRESET")
