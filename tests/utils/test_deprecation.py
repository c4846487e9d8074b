from __future__ import annotations

import unittest
import warnings

from monai_diffusion.utils.deprecation import renamed_keyword


class TestRenamedKeyword(unittest.TestCase):
    def test_old_name_warns_and_wins(self):
        with self.assertWarnsRegex(DeprecationWarning, r"f: `old` is deprecated, use `new`"):
            self.assertEqual(renamed_keyword("f", "old", 3, "new", 0, 0), 3)

    def test_new_name_alone_is_silent(self):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            self.assertEqual(renamed_keyword("f", "old", None, "new", 5, 0), 5)
            self.assertEqual(renamed_keyword("f", "old", None, "new", 0, 0), 0)

    def test_both_names_is_an_error(self):
        with self.assertRaisesRegex(ValueError, "f: `old` is the old name of `new`; pass only `new`"):
            renamed_keyword("f", "old", True, "new", True, False)


if __name__ == "__main__":
    unittest.main()
