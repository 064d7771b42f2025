"""Client documents: what a file is (type, pages, soundness), and what it says (class and
key fields), by the local classifier or by Azure AI Document Intelligence."""
