"""Protection status: reads what the product records and says whether each table is protected."""
